package server_test

import (
	"testing"

	. "github.com/onsi/gomega"

	"rotor.dev/rotor/pkg/server"
)

func TestMemoryLimitRatioIsAShare(t *testing.T) {
	for ratio, valid := range map[float64]bool{0: true, 0.9: true, 1: true, -0.1: false, 1.5: false} {
		g := NewWithT(t)
		o := server.DefaultOptions()
		o.IssuerURL, o.InsecureHTTP, o.MemoryLimitRatio = "http://127.0.0.1:8080", true, ratio
		if valid {
			g.Expect(o.Validate()).To(Succeed(), "ratio %v", ratio)
		} else {
			g.Expect(o.Validate()).To(MatchError(ContainSubstring("--memory-limit-ratio")), "ratio %v", ratio)
		}
	}
}

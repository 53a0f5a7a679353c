package charts_test

import (
	"os"
	"strings"
	"testing"

	. "github.com/onsi/gomega"
)

// A helm built with a plain `go install` reports no version and assumes
// Kubernetes v1.20, so `helm template` of this chart (kubeVersion >= 1.30)
// fails without --kube-version. bin/'s helm is stamped as helm's release is.
func TestHelmIsStampedSoTheChartRendersWithoutKubeVersion(t *testing.T) {
	if os.Getenv("HELM") != "" && !strings.Contains(os.Getenv("HELM"), "helm-"+helmVersion) {
		t.Skip("HELM points at a helm this project did not build")
	}
	g := NewWithT(t)
	out, _, err := run(t, nil, helmBin(t), "version", "--template", "{{.Version}}")
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(out).To(Equal(helmVersion))
	out, _, err = run(t, nil, helmBin(t), "template", "rotor", chartDir(t), "--namespace", "auth")
	g.Expect(err).NotTo(HaveOccurred(), "helm template without --kube-version")
	g.Expect(out).To(ContainSubstring("kind: Deployment"))
}

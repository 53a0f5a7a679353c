package login_test

import (
	"os"
	"path/filepath"
	"testing"

	. "github.com/onsi/gomega"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"rotor.dev/rotor/pkg/login"
)

// The printed entry parses as a kubeconfig whose user runs rotor login with
// the session's flags, absolute paths and kubectl's exec protocol.
func TestKubeconfigPrinted(t *testing.T) {
	g := NewWithT(t)
	t.Chdir(t.TempDir())
	o := login.Options{IssuerURL: "https://auth.example.com/", Username: "alice", Audience: "kubernetes", CAFile: "ca.crt"}
	b, err := login.Kubeconfig(o, login.KubeconfigOptions{Cluster: "prod"})
	g.Expect(err).NotTo(HaveOccurred())
	cfg, err := clientcmd.Load(b)
	g.Expect(err).NotTo(HaveOccurred())

	g.Expect(cfg.AuthInfos).To(HaveKey("rotor-alice"))
	exec := cfg.AuthInfos["rotor-alice"].Exec
	g.Expect(exec).NotTo(BeNil())
	g.Expect(exec.APIVersion).To(Equal("client.authentication.k8s.io/v1"))
	self, err := os.Executable()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(exec.Command).To(Equal(self))
	wd, err := os.Getwd()
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(exec.Args).To(Equal([]string{
		"login", "--issuer-url", "https://auth.example.com", "--client-id", "kubectl",
		"--audience", "kubernetes", "--username", "alice", "--ca-file", filepath.Join(wd, "ca.crt"),
	}))
	g.Expect(exec.InteractiveMode).To(Equal(clientcmdapi.IfAvailableExecInteractiveMode))
	g.Expect(exec.ProvideClusterInfo).To(BeFalse())
	g.Expect(cfg.Contexts).To(HaveKey("rotor-alice@prod"))
	g.Expect(cfg.Contexts["rotor-alice@prod"].Cluster).To(Equal("prod"))
	g.Expect(cfg.Contexts["rotor-alice@prod"].AuthInfo).To(Equal("rotor-alice"))

	// What rotor dev calls: the entry alone, with a given command.
	e := login.ExecConfig(login.Options{IssuerURL: "http://127.0.0.1:8080", Username: "demo"}, "/usr/local/bin/rotor")
	g.Expect(e.Command).To(Equal("/usr/local/bin/rotor"))
	g.Expect(e.Args).To(Equal([]string{"login", "--issuer-url", "http://127.0.0.1:8080", "--client-id", "kubectl", "--username", "demo"}))

	_, err = login.Kubeconfig(login.Options{IssuerURL: "https://a.example", Username: "alice", PasswordStdin: true}, login.KubeconfigOptions{})
	g.Expect(err).To(MatchError(ContainSubstring("--password-stdin")))
	_, err = login.Kubeconfig(o, login.KubeconfigOptions{Context: "c"})
	g.Expect(err).To(MatchError(ContainSubstring("--context needs --cluster")))
}

// Writing into an existing kubeconfig keeps its entries and adds the user
// and the context; writing again replaces the user's entry.
func TestKubeconfigMerged(t *testing.T) {
	g := NewWithT(t)
	path := filepath.Join(t.TempDir(), "config")
	existing := clientcmdapi.NewConfig()
	existing.Clusters["prod"] = &clientcmdapi.Cluster{Server: "https://k8s.example.com"}
	existing.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: "static"}
	existing.Contexts["admin@prod"] = &clientcmdapi.Context{Cluster: "prod", AuthInfo: "admin"}
	existing.CurrentContext = "admin@prod"
	g.Expect(clientcmd.WriteToFile(*existing, path)).To(Succeed())

	o := login.Options{IssuerURL: "https://auth.example.com", Username: "alice", ClientID: "kubectl-prod"}
	k := login.KubeconfigOptions{User: "alice", Cluster: "prod", Context: "alice-prod", Command: "/opt/rotor"}
	g.Expect(login.WriteKubeconfig(path, o, k)).To(Succeed())
	o.Audience = "kubernetes"
	g.Expect(login.WriteKubeconfig(path, o, k)).To(Succeed())

	cfg, err := clientcmd.LoadFromFile(path)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(cfg.CurrentContext).To(Equal("admin@prod"))
	g.Expect(cfg.Clusters).To(HaveKey("prod"))
	g.Expect(cfg.AuthInfos["admin"].Token).To(Equal("static"))
	g.Expect(cfg.AuthInfos).To(HaveLen(2))
	exec := cfg.AuthInfos["alice"].Exec
	g.Expect(exec.Command).To(Equal("/opt/rotor"))
	g.Expect(exec.Args).To(ContainElements("kubectl-prod", "kubernetes"))
	g.Expect(cfg.Contexts["alice-prod"].AuthInfo).To(Equal("alice"))
	fi, err := os.Stat(path)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(fi.Mode().Perm()).To(Equal(os.FileMode(0o600)))

	// A new file is created.
	fresh := filepath.Join(t.TempDir(), "new", "config")
	g.Expect(login.WriteKubeconfig(fresh, o, login.KubeconfigOptions{})).To(Succeed())
	cfg, err = clientcmd.LoadFromFile(fresh)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(cfg.AuthInfos).To(HaveKey("rotor-alice"))
}

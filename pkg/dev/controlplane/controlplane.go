// Package controlplane starts a local Kubernetes control plane (etcd and
// kube-apiserver, built from Go modules into bin/k8s) with rotor's CRDs
// installed. `rotor dev`, the tests and the benchmarks all use it.
package controlplane

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"rotor.dev/rotor/config/crd"
)

// AssetsEnv names the directory holding kube-apiserver, etcd and kubectl.
const AssetsEnv = "KUBEBUILDER_ASSETS"

// ControlPlane is a running etcd and kube-apiserver.
type ControlPlane struct {
	env *envtest.Environment
	// configDir holds files the API server reads while it runs.
	configDir string
	// Config authenticates as a cluster administrator.
	Config *rest.Config
}

// Options configure Start.
type Options struct {
	// AssetsDir holds the binaries; empty means $KUBEBUILDER_ASSETS, then
	// bin/k8s under the module root.
	AssetsDir string
	// APIServerFlags are extra kube-apiserver flags (name without dashes).
	APIServerFlags map[string]string
	// AuthenticationConfig, when set, is an apiserver.config.k8s.io
	// AuthenticationConfiguration the API server is started with
	// (--authentication-config): how it comes to trust a rotor. The API
	// server reloads the file, and keeps retrying an issuer it cannot reach
	// yet, so rotor may start after it.
	AuthenticationConfig []byte
}

// Start starts etcd and kube-apiserver and installs rotor's CRDs. It takes
// about three seconds.
func Start(opts Options) (*ControlPlane, error) {
	dir, err := assetsDir(opts.AssetsDir)
	if err != nil {
		return nil, err
	}
	crds, err := crd.Definitions()
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: dir,
		CRDInstallOptions:     envtest.CRDInstallOptions{CRDs: crds},
		ErrorIfCRDPathMissing: true,
	}
	args := env.ControlPlane.GetAPIServer().Configure()
	for k, v := range opts.APIServerFlags {
		args.Set(k, v)
	}
	var configDir string
	if opts.AuthenticationConfig != nil {
		if configDir, err = os.MkdirTemp("", "rotor-authn-"); err != nil {
			return nil, err
		}
		path := filepath.Join(configDir, "authentication-config.yaml")
		if err := os.WriteFile(path, opts.AuthenticationConfig, 0o600); err != nil {
			return nil, err
		}
		args.Set("authentication-config", path)
	}
	cfg, err := env.Start()
	if err != nil {
		if configDir != "" {
			_ = os.RemoveAll(configDir)
		}
		return nil, fmt.Errorf("starting control plane from %s (run 'make control-plane' to build it): %w", dir, err)
	}
	return &ControlPlane{env: env, Config: cfg, configDir: configDir}, nil
}

// Kubeconfig returns a kubeconfig for a new user in system:masters.
func (c *ControlPlane) Kubeconfig(user string) ([]byte, error) {
	u, err := c.env.AddUser(envtest.User{Name: user, Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("adding user %s: %w", user, err)
	}
	return u.KubeConfig()
}

// UserConfig returns a rest.Config for a user that is in the given groups only,
// for tests that check what RBAC allows.
func (c *ControlPlane) UserConfig(user string, groups ...string) (*rest.Config, error) {
	u, err := c.env.AddUser(envtest.User{Name: user, Groups: groups}, nil)
	if err != nil {
		return nil, fmt.Errorf("adding user %s: %w", user, err)
	}
	return u.Config(), nil
}

// EtcdURL is the client URL of the control plane's etcd (plain HTTP on
// 127.0.0.1), for tools that seed its storage directly.
func (c *ControlPlane) EtcdURL() string {
	return c.env.ControlPlane.Etcd.URL.String()
}

// Stop stops kube-apiserver and etcd and removes their data.
func (c *ControlPlane) Stop() error {
	err := c.env.Stop()
	if c.configDir != "" {
		_ = os.RemoveAll(c.configDir)
	}
	return err
}

func assetsDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv(AssetsEnv)
	}
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", fmt.Errorf("%s is not set and %w", AssetsEnv, err)
		}
		dir = filepath.Join(root, "bin", "k8s")
	}
	for _, bin := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("%s not found in %s: run 'make control-plane' (it builds the control plane from Go modules)", bin, dir)
		}
	}
	return dir, nil
}

// moduleRoot finds the directory of rotor's go.mod from the working
// directory, so that a test in any package finds bin/k8s.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// ServiceAccountSigningKeyFile is the PEM key kube-apiserver signs
// ServiceAccount tokens with, so tests can mint tokens the TokenRequest API
// will not (an expired one, say).
func (c *ControlPlane) ServiceAccountSigningKeyFile() string {
	return filepath.Join(c.env.ControlPlane.APIServer.CertDir, "sa-signer.key")
}

// ServiceAccountIssuer is the iss of the ServiceAccount tokens it issues.
func (c *ControlPlane) ServiceAccountIssuer() string {
	return c.env.ControlPlane.APIServer.SecureServing.URL("https", "/").String()
}

package login

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// installHint is what kubectl shows when the plugin's command is missing.
const installHint = "rotor login is part of the rotor binary; install rotor, or run `rotor kubeconfig` again with --command set to where it is."

// ExecConfig is the kubeconfig exec entry that runs `rotor login` for the
// session o names. command is the rotor binary; empty is this executable.
// Paths in o are made absolute: kubectl runs the plugin in its own working
// directory. Password flags are left out, as kubectl's stdin is not the
// user's; --password-file and --token-file are kept (a CI job's files).
func ExecConfig(o Options, command string) *clientcmdapi.ExecConfig {
	if command == "" {
		if exe, err := os.Executable(); err == nil {
			command = exe
		} else {
			command = "rotor"
		}
	}
	args := []string{"login", "--issuer-url", strings.TrimSuffix(o.IssuerURL, "/"), "--client-id", cmpOr(o.ClientID, DefaultClientID)}
	if o.Audience != "" {
		args = append(args, "--audience", o.Audience)
	}
	if o.Username != "" {
		args = append(args, "--username", o.Username)
	}
	for _, f := range []struct{ flag, path string }{
		{"--ca-file", o.CAFile}, {"--cache-dir", o.CacheDir}, {"--password-file", o.PasswordFile}, {"--token-file", o.TokenFile},
	} {
		if f.path != "" {
			args = append(args, f.flag, absPath(f.path))
		}
	}
	return &clientcmdapi.ExecConfig{
		APIVersion:      APIVersion,
		Command:         command,
		Args:            args,
		InteractiveMode: clientcmdapi.IfAvailableExecInteractiveMode,
		// The plugin needs nothing of the cluster; its CA data would only
		// make KUBERNETES_EXEC_INFO large.
		ProvideClusterInfo: false,
		InstallHint:        installHint,
	}
}

func absPath(p string) string {
	if abs, err := filepath.Abs(p); err == nil {
		return abs
	}
	return p
}

// KubeconfigOptions say where in a kubeconfig the exec entry goes.
type KubeconfigOptions struct {
	// User is the name of the users[] entry (default rotor-<username>).
	User string
	// Cluster, when set, adds a context pairing that cluster with User,
	// named Context (default <user>@<cluster>).
	Cluster string
	Context string
	// Command is the rotor binary the entry runs (default: this executable).
	Command string
}

// UserName is the users[] entry name for o (k.User, else rotor-<username>).
func (k KubeconfigOptions) UserName(o Options) string {
	if k.User != "" {
		return k.User
	}
	if o.Username != "" {
		return "rotor-" + o.Username
	}
	return "rotor"
}

// AddToKubeconfig sets the exec entry of o in cfg as user k.User, and a
// context when k.Cluster is set. Other entries are left as they are.
func AddToKubeconfig(cfg *clientcmdapi.Config, o Options, k KubeconfigOptions) error {
	if err := checkIssuer(o.IssuerURL); err != nil {
		return err
	}
	if o.Username == "" && o.TokenFile == "" {
		return errors.New("--username is required (or --token-file)")
	}
	if o.PasswordStdin {
		return errors.New("--password-stdin cannot go into a kubeconfig: kubectl's stdin is not the password")
	}
	if k.Context != "" && k.Cluster == "" {
		return errors.New("--context needs --cluster: the cluster the context pairs with the user")
	}
	user := k.UserName(o)
	cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{Exec: ExecConfig(o, k.Command)}
	if k.Cluster != "" {
		name := cmpOr(k.Context, user+"@"+k.Cluster)
		cfg.Contexts[name] = &clientcmdapi.Context{Cluster: k.Cluster, AuthInfo: user}
	}
	return nil
}

// WriteKubeconfig adds the exec entry (AddToKubeconfig) to the kubeconfig
// at path, creating the file when there is none, and keeping everything
// else in it.
func WriteKubeconfig(path string, o Options, k KubeconfigOptions) error {
	cfg, err := clientcmd.LoadFromFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		cfg, err = clientcmdapi.NewConfig(), nil
	}
	if err != nil {
		return fmt.Errorf("reading kubeconfig %s: %w", path, err)
	}
	if err := AddToKubeconfig(cfg, o, k); err != nil {
		return err
	}
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing kubeconfig %s: %w", path, err)
	}
	return nil
}

// Kubeconfig is a kubeconfig holding only the exec entry (and the context),
// as YAML.
func Kubeconfig(o Options, k KubeconfigOptions) ([]byte, error) {
	cfg := clientcmdapi.NewConfig()
	if err := AddToKubeconfig(cfg, o, k); err != nil {
		return nil, err
	}
	b, err := clientcmd.Write(*cfg)
	if err != nil {
		return nil, fmt.Errorf("encoding kubeconfig: %w", err)
	}
	return b, nil
}

// Command rotor is a Kubernetes-native issuer of short-lived JWT access
// tokens and rotating refresh tokens.
//
//	rotor [serve] [flags]              the manager and the issuer, against a cluster
//	rotor dev [flags]                  the same against a local control plane, with a demo account
//	rotor account create NAME [flags]  print an account Secret; the password is read from stdin
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"rotor.dev/rotor/pkg/accounts"
	"rotor.dev/rotor/pkg/dev"
	"rotor.dev/rotor/pkg/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "v0.1.0-dev"

func main() {
	if err := run(os.Args[1:]); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "rotor:", err)
		}
		os.Exit(1)
	}
}

func run(args []string) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(args)
	case "dev":
		return runDev(args)
	case "account":
		if len(args) == 0 || args[0] != "create" {
			return errors.New("usage: rotor account create NAME [--groups a,b] [--namespace NS] < password")
		}
		return accountCreate(args[1:], os.Stdin, os.Stdout)
	case "version":
		fmt.Println(version)
		return nil
	}
	return fmt.Errorf("unknown command %q (serve, dev, account create, version)", cmd)
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func serve(args []string) error {
	fs := flag.NewFlagSet("rotor serve", flag.ContinueOnError)
	o := server.DefaultOptions()
	o.AddFlags(fs)
	zo := zap.Options{}
	zo.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := zap.New(zap.UseFlagOptions(&zo))
	ctrl.SetLogger(log)
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return err
	}
	srv, err := server.New(cfg, o, log)
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	log.Info("starting rotor", "version", version, "issuer", o.IssuerURL, "address", srv.Addr().String())
	return srv.Start(ctx)
}

func runDev(args []string) error {
	fs := flag.NewFlagSet("rotor dev", flag.ContinueOnError)
	o := server.DefaultOptions()
	// Empty: free ports on 127.0.0.1, printed with the instructions.
	o.ProbeAddress, o.MetricsAddress = "", ""
	// One replica: no lease to wait for or to release at Ctrl-C. Metrics
	// in plain HTTP on loopback, for curl.
	o.LeaderElect, o.MetricsSecure = false, false
	o.AddFlags(fs)
	d := dev.Options{}
	fs.StringVar(&d.Addr, "addr", "", "Address of the issuer; the issuer URL is http://<addr>. Default 127.0.0.1:8080, or a free port if 8080 is taken.")
	fs.StringVar(&d.StateDir, "state-dir", ".rotor/dev", "Directory for the kubeconfig of the local control plane.")
	fs.StringVar(&d.DemoUser, "demo-user", "demo", "Username of the demo account.")
	fs.StringVar(&d.DemoPassword, "demo-password", "", "Password of the demo account (default: generated and printed).")
	fs.Func("demo-groups", "Comma-separated groups of the demo account.", func(v string) error {
		d.DemoGroups = splitList(v)
		return nil
	})
	// Development logs (console, stack traces on errors), at info: the
	// control plane's debug lines would bury the instructions.
	zo := zap.Options{Development: true, Level: zapcore.InfoLevel}
	zo.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log := zap.New(zap.UseFlagOptions(&zo))
	ctrl.SetLogger(log)
	ctx, cancel := signalContext()
	defer cancel()
	return dev.Run(ctx, o, d, log, os.Stdout)
}

func accountCreate(args []string, stdin io.Reader, stdout io.Writer) error {
	fs := flag.NewFlagSet("rotor account create", flag.ContinueOnError)
	namespace := fs.String("namespace", server.DefaultOptions().Namespace, "Namespace of the account Secret (rotor's namespace).")
	groups := fs.String("groups", "", "Comma-separated groups.")
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return errors.New("usage: rotor account create NAME [--groups a,b] [--namespace NS] < password")
	}
	name := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	password, err := io.ReadAll(io.LimitReader(stdin, 1<<10))
	if err != nil {
		return fmt.Errorf("reading password from stdin: %w", err)
	}
	password = []byte(strings.TrimRight(string(password), "\r\n"))
	if len(password) == 0 {
		return errors.New("no password on stdin")
	}
	manifest, err := accounts.Manifest(name, *namespace, splitList(*groups), password)
	if err != nil {
		return err
	}
	_, err = stdout.Write(manifest)
	return err
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

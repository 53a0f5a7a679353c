package login

import (
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"
)

// stdinIsTerminal: a person runs rotor login by hand, in a terminal.
func stdinIsTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// isTerminal: w is a terminal (a person reads it).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// terminalPrompt asks for a password on the controlling terminal, not on
// stdin and stdout: kubectl reads the plugin's stdout, and the terminal is
// where the person is. Echo is off while the password is typed; Ctrl-C then
// restores the terminal before the process ends, or the shell would be
// left without echo.
func terminalPrompt(prompt string) (string, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("opening the terminal to ask for the password: %w", err)
	}
	defer tty.Close()
	fd := int(tty.Fd())
	state, err := term.GetState(fd)
	if err != nil {
		return "", fmt.Errorf("reading the terminal's state: %w", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	done := make(chan struct{})
	defer func() {
		signal.Stop(sigs)
		close(done)
	}()
	go func() {
		select {
		case <-sigs:
			_ = term.Restore(fd, state)
			fmt.Fprintln(tty)
			os.Exit(130)
		case <-done:
		}
	}()
	if _, err := fmt.Fprint(tty, prompt); err != nil {
		return "", fmt.Errorf("writing to the terminal: %w", err)
	}
	pw, err := term.ReadPassword(fd)
	fmt.Fprintln(tty) // the Enter that was not echoed
	if err != nil {
		return "", fmt.Errorf("reading the password from the terminal: %w", err)
	}
	return string(pw), nil
}

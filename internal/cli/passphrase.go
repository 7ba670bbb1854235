package cli

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// readPassphrase reads a passphrase from file ("-" = stdin), or prompts on the
// terminal without echo (twice when confirm is set). Only one trailing newline
// is stripped; the passphrase is never printed.
func readPassphrase(cmd *cobra.Command, file, prompt string, confirm bool) ([]byte, error) {
	return readSecret(cmd, file, prompt, confirm, "passphrase", "--passphrase-file")
}

// readPassword is readPassphrase for user passwords, from the flag named flag.
func readPassword(cmd *cobra.Command, file, flag, prompt string, confirm bool) ([]byte, error) {
	return readSecret(cmd, file, prompt, confirm, "password", flag)
}

// readSecret reads one line from file ("-" = stdin) or prompts on the
// terminal without echo. what names the secret in errors ("passphrase"),
// flag the option that gives a file.
func readSecret(cmd *cobra.Command, file, prompt string, confirm bool, what, flag string) ([]byte, error) {
	if file != "" {
		var r io.Reader
		if file == "-" {
			r = cmd.InOrStdin()
		} else {
			f, err := os.Open(file)
			if err != nil {
				return nil, fmt.Errorf("read %s file: %w", what, err)
			}
			defer f.Close()
			r = f
		}
		line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read %s: %w", what, err)
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) == 0 {
			return nil, fmt.Errorf("%s file is empty", what)
		}
		return line, nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, fmt.Errorf("no terminal to prompt for the %s: use %s FILE (or - for stdin)", what, flag)
	}
	fmt.Fprint(cmd.ErrOrStderr(), promptText(prompt))
	p, err := term.ReadPassword(fd)
	fmt.Fprintln(cmd.ErrOrStderr())
	if err != nil {
		return nil, err
	}
	if confirm {
		fmt.Fprint(cmd.ErrOrStderr(), promptText("Repeat "+strings.ToLower(prompt[:1])+prompt[1:]))
		q, err := term.ReadPassword(fd)
		fmt.Fprintln(cmd.ErrOrStderr())
		same := err == nil && bytes.Equal(p, q)
		clear(q)
		if err != nil {
			clear(p)
			return nil, err
		}
		if !same {
			clear(p)
			return nil, fmt.Errorf("the %ss do not match", what)
		}
	}
	return p, nil
}

// useSecrets runs fn, the request that needs secrets read by the CLI, then
// clears every one of them, whatever fn returned. The string copies fn
// hands to the client cannot be cleared (docs/security.md).
func useSecrets(fn func() error, secrets ...[]byte) error {
	defer func() {
		for _, b := range secrets {
			clear(b)
		}
	}()
	return fn()
}

// promptText is prompt followed by one ": ", whether or not prompt ends in
// a colon already.
func promptText(prompt string) string {
	return strings.TrimSuffix(strings.TrimSpace(prompt), ":") + ": "
}

// stdinIsTerminal reports whether the CLI can prompt.
func stdinIsTerminal() bool { return term.IsTerminal(int(os.Stdin.Fd())) }

// promptLine asks for one line of visible input on the terminal.
func promptLine(cmd *cobra.Command, prompt string) (string, error) {
	if !stdinIsTerminal() {
		return "", errors.New("no terminal to prompt on")
	}
	fmt.Fprint(cmd.ErrOrStderr(), prompt)
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return strings.TrimSpace(line), nil
}

// confirmAction asks the operator to type "yes" on a terminal, unless yes
// (--yes) is set. Without a terminal it refuses.
func confirmAction(cmd *cobra.Command, yes bool, question string) error {
	if yes {
		return nil
	}
	if !stdinIsTerminal() {
		return fmt.Errorf("%s: no terminal to confirm on; add --yes", question)
	}
	ans, err := promptLine(cmd, question+" Type yes to continue: ")
	if err != nil {
		return err
	}
	if ans != "yes" {
		return errors.New("cancelled")
	}
	return nil
}

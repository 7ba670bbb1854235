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
	if file != "" {
		var r io.Reader
		if file == "-" {
			r = cmd.InOrStdin()
		} else {
			f, err := os.Open(file)
			if err != nil {
				return nil, fmt.Errorf("read passphrase file: %w", err)
			}
			defer f.Close()
			r = f
		}
		line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read passphrase: %w", err)
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) == 0 {
			return nil, errors.New("passphrase file is empty")
		}
		return line, nil
	}
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return nil, errors.New("no terminal to prompt for the passphrase: use --passphrase-file FILE (or - for stdin)")
	}
	fmt.Fprint(cmd.ErrOrStderr(), prompt+": ")
	p, err := term.ReadPassword(fd)
	fmt.Fprintln(cmd.ErrOrStderr())
	if err != nil {
		return nil, err
	}
	if confirm {
		fmt.Fprint(cmd.ErrOrStderr(), "Repeat "+strings.ToLower(prompt[:1])+prompt[1:]+": ")
		q, err := term.ReadPassword(fd)
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(p, q) {
			return nil, errors.New("the passphrases do not match")
		}
	}
	return p, nil
}

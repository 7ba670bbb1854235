package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/fsutil"
)

func newLoginCmd(g *globals) *cobra.Command {
	var username, passFile string
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Log in as an administrator and keep the session token for later commands",
		Long: `Log in with a user name and password. The session token is stored in
$HOME/.coffer-token (mode 0600; $COFFER_TOKEN_FILE overrides the path) and
used by later commands that get no --token and no $COFFER_TOKEN. Sessions
expire (8 hours by default); "coffer logout" ends one early.

The password is read from --password-file (- for stdin) or asked on the
terminal; the user name from --username or asked on the terminal.`,
		Example: `  coffer login --username alice
  coffer login --username alice --password-file - < pw.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if username == "" {
				u, err := promptLine(cmd, "Username: ")
				if err != nil {
					return errors.New("give --username NAME")
				}
				username = u
			}
			pw, err := readPassword(cmd, passFile, "--password-file", "Password", false)
			if err != nil {
				return err
			}
			path := tokenFilePath()
			if path == "" {
				return errors.New("no home directory for the token file: set COFFER_TOKEN_FILE")
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				s, err := c.Login(ctx, username, string(pw))
				if err != nil {
					return err
				}
				if err := fsutil.WriteFile(path, []byte(s.Token+"\n")); err != nil {
					return fmt.Errorf("store the session token: %w", err)
				}
				if cn, err := g.resolve(); err == nil && cn.tokenFromFile == "" {
					g.warn(fmt.Sprintf("warning: the stored session is not used while %s gives the credentials: later commands run as that, not as %s (check with coffer whoami)", orDash(cn.source), s.User))
				}
				return g.printResult(cmd, map[string]any{"user": s.User, "roles": s.Roles, "expires": s.Expires, "token_file": path},
					"Logged in as %s (roles %s) until %s.\nSession token stored in %s.\n", s.User, orDash(strings.Join(s.Roles, ", ")), fmtTime(s.Expires), path)
			})
		},
	}
	cmd.Flags().StringVarP(&username, "username", "u", "", "user name (asked on the terminal if not given)")
	cmd.Flags().StringVar(&passFile, "password-file", "", "read the password from this file (- for stdin)")
	return cmd
}

func newLogoutCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "End the session and remove the stored session token",
		Long: `End the current session on the server (the token from --token,
$COFFER_TOKEN or the token file) and remove the token file written by
"coffer login". An expired session's file is removed too.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cn, err := g.resolve()
			if err != nil {
				return err
			}
			if cn.cfg.Token == "" {
				return errors.New("not logged in: no session token")
			}
			c, err := client.New(cn.cfg)
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx()
			defer cancel()
			err = c.Logout(ctx)
			expired := client.IsCode(err, "unauthenticated")
			if err != nil && !expired {
				return err
			}
			path := tokenFilePath()
			removed := false
			if path != "" {
				if b, rerr := os.ReadFile(path); rerr == nil && strings.TrimSpace(string(b)) == cn.cfg.Token {
					if rerr := os.Remove(path); rerr != nil {
						return fmt.Errorf("remove %s: %w", path, rerr)
					}
					removed = true
				}
			}
			if g.format == "json" {
				return g.printJSON(cmd, map[string]any{"logged_out": !expired, "expired": expired, "token_file_removed": removed})
			}
			msg := "logged out"
			if expired {
				msg = "the session had already ended"
			}
			if removed {
				msg += "; removed " + path
			}
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			return nil
		},
	}
}

func newWhoamiCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "Show who the server takes you for: kind, name, roles, session expiry",
		Args:  cobra.NoArgs,
		Long: `Show who the server takes you for, and where the credentials came from
(first match wins): the local control socket (--data-dir), an enrolled
endpoint's directory (--client-dir), --token, --token-file, $COFFER_TOKEN,
or the session stored by "coffer login".`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cn, err := g.resolve()
			if err != nil {
				return err
			}
			source := cn.source
			if source == "" {
				source = "none"
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				w, err := c.WhoAmI(ctx)
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, struct {
						client.Whoami
						CredentialSource string `json:"credential_source"`
					}{w, source})
				}
				t := newTable(cmd)
				fmt.Fprintf(t, "Credentials:\t%s\n", source)
				fmt.Fprintf(t, "Kind:\t%s\n", w.Kind)
				fmt.Fprintf(t, "Name:\t%s\n", w.Name)
				fmt.Fprintf(t, "Roles:\t%s\n", orDash(strings.Join(w.Roles, ", ")))
				if w.Expires != nil {
					fmt.Fprintf(t, "Expires:\t%s (in %s)\n", fmtTime(*w.Expires), time.Until(*w.Expires).Round(time.Minute))
				}
				return t.Flush()
			})
		},
	}
}

package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/datadir"
	"github.com/coffer-kms/coffer/internal/server"
	"github.com/coffer-kms/coffer/internal/tlsutil"
)

// Files of an enrolled directory.
const (
	enrollKeyFile   = "client.key"
	enrollCertFile  = "client.crt"
	enrollCAFile    = "ca.crt"
	enrollTokenFile = "token"
)

func newEndpointCmd(g *globals) *cobra.Command {
	e := &cobra.Command{
		Use:   "endpoint",
		Short: "Enrol, list, grant, renew and revoke endpoints (the clients that use keys)",
		Long: `An endpoint is a client (a database, an application host) enrolled with
Coffer. Enrolling gives it a bearer token and a client certificate for mutual
TLS, written to a directory it then uses with --client-dir DIR (or
COFFER_CLIENT_DIR=DIR). An endpoint sees only the wallets it is granted:
read, read_modify or manage. Endpoints are managed by key administrators.`,
	}
	e.AddCommand(newEndpointEnrollCmd(g), newEndpointListCmd(g), newEndpointShowCmd(g), newEndpointRevokeCmd(g), newEndpointRenewCmd(g), newEndpointAppRoleCmd(g), newEndpointGrantCmd(g))
	return e
}

func permissionCompletion(cmd *cobra.Command) {
	cmd.RegisterFlagCompletionFunc("permission", fixedCompletion(client.PermRead, client.PermReadModify, client.PermManage))
}

// endpointAddresses are the addresses written to an enrolled directory:
// --endpoint-address, else the network addresses the CLI used, else (over
// the control socket) the URL the server on that data dir listens on.
func endpointAddresses(cn conn, explicit []string) ([]string, error) {
	if len(explicit) > 0 {
		return explicit, nil
	}
	var out []string
	for _, a := range cn.cfg.Addresses {
		if !strings.HasPrefix(a, "unix://") {
			out = append(out, a)
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	if cn.socketDir != "" {
		if _, url, err := server.ReadPID(cn.socketDir); err == nil && url != "" {
			return []string{url}, nil
		}
	}
	return nil, errors.New("no network address for the endpoint to use: give --endpoint-address https://host:port")
}

// checkEmptyDir creates dir (0700) or accepts an existing empty directory
// (made 0700). created says whether it made it.
func checkEmptyDir(dir string) (created bool, err error) {
	f, err := os.Open(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return true, os.MkdirAll(dir, 0o700)
	case err != nil:
		return false, err
	}
	defer f.Close()
	if _, err := f.Readdirnames(1); !errors.Is(err, io.EOF) {
		if err == nil {
			return false, fmt.Errorf("%s is not empty: enrol into a new or empty directory", dir)
		}
		return false, fmt.Errorf("%s: %w", dir, err)
	}
	return false, os.Chmod(dir, 0o700) // #nosec G302 -- a directory: 0700 (owner only; x is needed to enter it)
}

func writeNew(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close() // #nosec G104 -- closing after the failed write, which is the one returned (the caller names the directory)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close() // #nosec G104 -- closing after the failed fsync, which is the one returned (the caller names the directory)
		return err
	}
	return f.Close()
}

func newEndpointEnrollCmd(g *globals) *cobra.Command {
	var (
		out, desc, wallet, perm string
		addrs                   []string
		noCert                  bool
	)
	cmd := &cobra.Command{
		Use:   "enroll NAME --out DIR",
		Short: "Enrol an endpoint and write its credentials to a new directory",
		Long: `Enrol the endpoint NAME. An ECDSA P-256 key is generated here and never
leaves DIR: the server signs a certificate request for it. DIR (new or empty,
made 0700) receives:

  client.key   the private key (0600)
  client.crt   the client certificate signed by Coffer's CA
  ca.crt       the CA bundle to trust for the server's certificate
  token        the endpoint's bearer token (0600)
  config.json  endpoint name, server addresses and these file names

The server addresses are --endpoint-address, else the address this command
used (over the control socket: the URL of the server on --data-dir).
With --wallet W the endpoint is then granted --permission (default read) on W.
Copy DIR to the endpoint's host and use it there with --client-dir DIR or
COFFER_CLIENT_DIR=DIR. The token is shown nowhere else: keep DIR private.`,
		Example: `  coffer endpoint enroll db1 --out ./db1-credentials --wallet db-prod --permission read
  COFFER_CLIENT_DIR=./db1-credentials coffer secret get tde/master --wallet db-prod`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if out == "" {
				return errors.New("--out DIR is required: the directory to write the credentials to")
			}
			if perm != "" && wallet == "" {
				return errors.New("--permission goes with --wallet W")
			}
			if wallet != "" && perm == "" {
				perm = client.PermRead
			}
			cn, err := g.resolve()
			if err != nil {
				return err
			}
			addresses, err := endpointAddresses(cn, addrs)
			if err != nil {
				return err
			}
			dir, err := filepath.Abs(out)
			if err != nil {
				return err
			}
			c, err := client.New(cn.cfg)
			if err != nil {
				return err
			}
			created, err := checkEmptyDir(dir)
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx()
			defer cancel()

			req := client.EnrollRequest{Name: name, Description: desc}
			var keyPEM []byte
			if !noCert {
				key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
				if err != nil {
					return err
				}
				der, err := x509.MarshalPKCS8PrivateKey(key)
				if err != nil {
					return err
				}
				keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
				csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
				if err != nil {
					return fmt.Errorf("certificate request: %w", err)
				}
				req.CSR = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))
			}
			enr, err := c.EnrollEndpoint(ctx, req)
			if err != nil {
				if created {
					os.Remove(dir) // #nosec G104 -- a directory this command created, still empty (the files are written after the call): one left behind is harmless, as enrolment accepts an empty directory
				}
				if req.CSR != "" && client.IsCode(err, "unavailable") {
					return fmt.Errorf("%w\n(to enrol with a token only, add --no-cert)", err)
				}
				return err
			}
			// From here on the endpoint exists: say so if writing fails.
			failed := func(err error) error {
				return fmt.Errorf("endpoint %s is enrolled but its credentials could not be written to %s: %w (revoke it with \"coffer endpoint revoke %s\" and enrol again)", name, dir, err, name)
			}
			ec := client.EnrollmentConfig{Endpoint: name, Addresses: addresses, TokenFile: enrollTokenFile}
			type file struct {
				name, what string
				data       []byte
				mode       os.FileMode
			}
			var files []file
			if len(keyPEM) > 0 && enr.Certificate != "" {
				ec.ClientCert, ec.ClientKey = enrollCertFile, enrollKeyFile
				files = append(files, file{enrollKeyFile, "private key (ECDSA P-256); never leaves this directory", keyPEM, 0o600},
					file{enrollCertFile, "client certificate" + certExpiry(enr.Endpoint), []byte(enr.Certificate), 0o644})
			}
			ca := []byte(enr.CA)
			if len(ca) == 0 {
				ca = localCA(cn)
			}
			if len(ca) > 0 {
				ec.CACert = enrollCAFile
				files = append(files, file{enrollCAFile, "CA certificates to trust", ca, 0o644})
			}
			files = append(files, file{enrollTokenFile, "bearer token", []byte(enr.Token + "\n"), 0o600})
			cfgJSON, _ := json.MarshalIndent(ec, "", "  ") // #nosec G117 -- the fields hold file names (token_file, client_key), never the token or key
			files = append(files, file{client.EnrollmentConfigFile, "addresses " + strings.Join(addresses, ", "), append(cfgJSON, '\n'), 0o644})
			for _, f := range files {
				if err := writeNew(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
					return failed(err)
				}
			}
			var granted *client.Wallet
			if wallet != "" {
				w, err := c.Grant(ctx, wallet, name, perm)
				if err != nil {
					return fmt.Errorf("endpoint %s is enrolled (credentials in %s) but the grant on wallet %s failed: %w", name, dir, wallet, err)
				}
				granted = &w
			}
			if g.format == "json" {
				names := make([]string, len(files))
				for i, f := range files {
					names[i] = f.name
				}
				res := map[string]any{"endpoint": enr.Endpoint, "dir": dir, "files": names, "addresses": addresses}
				if granted != nil {
					res["grant"] = map[string]string{"wallet": wallet, "permission": perm}
				}
				return g.printJSON(cmd, res)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Endpoint %s enrolled.\nWrote %s (0700):\n", name, dir)
			t := newTable(cmd)
			for _, f := range files {
				fmt.Fprintf(t, "  %s\t%s\n", f.name, f.what)
			}
			t.Flush()
			if ec.ClientCert == "" {
				fmt.Fprintln(w, "No client certificate: the endpoint authenticates with its token only.")
			}
			if granted != nil {
				fmt.Fprintf(w, "Granted %s on wallet %s.\n", perm, wallet)
			} else {
				fmt.Fprintf(w, "No wallet granted yet: coffer endpoint grant %s --wallet W --permission read\n", name)
			}
			fmt.Fprintf(w, "\nUse it (keep the directory private):\n  export COFFER_CLIENT_DIR=%s\n  coffer whoami\nor: coffer --client-dir %s secret get NAME --wallet W\n", dir, dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&out, "out", "o", "", "new or empty directory for the credentials (required)")
	f.StringVarP(&desc, "description", "d", "", "what the endpoint is")
	f.StringVarP(&wallet, "wallet", "w", "", "grant the endpoint access to this wallet")
	f.StringVar(&perm, "permission", "", "permission on --wallet: read (default), read_modify or manage")
	f.StringArrayVar(&addrs, "endpoint-address", nil, "server address for the endpoint's config.json (repeatable; default: the address used now)")
	f.BoolVar(&noCert, "no-cert", false, "issue a token only, no client certificate")
	permissionCompletion(cmd)
	return cmd
}

func certExpiry(e client.Endpoint) string {
	if e.CertNotAfter == nil {
		return ""
	}
	return ", expires " + fmtTime(*e.CertNotAfter)
}

// localCA is the CA to trust when the server sends none: the CLI's own
// --ca-cert, or the generated CA of the server on --data-dir.
func localCA(cn conn) []byte {
	paths := []string{cn.cfg.CACert}
	if cn.socketDir != "" {
		paths = append(paths, filepath.Join(datadir.TLSDir(cn.socketDir), tlsutil.CAFile))
	}
	for _, p := range paths {
		if p == "" {
			continue
		}
		if b, err := os.ReadFile(p); err == nil {
			return b
		}
	}
	return nil
}

func newEndpointListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List endpoints",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				es, err := collect(c.Endpoints(ctx))
				if err != nil {
					return err
				}
				return printList(g, cmd, es, "NAME\tSTATE\tCERTIFICATE EXPIRES\tCREATED\tDESCRIPTION", func(e client.Endpoint) string {
					return fmt.Sprintf("%s\t%s\t%s\t%s\t%s", e.Name, e.State, fmtTimePtr(e.CertNotAfter), fmtTime(e.Created), orDash(e.Description))
				})
			})
		},
	}
}

func newEndpointShowCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show an endpoint, its certificate and its wallet grants",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				e, err := c.GetEndpoint(ctx, args[0])
				if err != nil {
					return err
				}
				grants := map[string]string{}
				for w, err := range c.Wallets(ctx) {
					if err != nil {
						break // grants are shown when the caller may list wallets
					}
					if p, ok := w.Grants[e.Name]; ok {
						grants[w.Name] = p
					}
				}
				if g.format == "json" {
					return g.printJSON(cmd, struct {
						client.Endpoint
						Grants map[string]string `json:"grants"`
					}{e, grants})
				}
				t := newTable(cmd)
				fmt.Fprintf(t, "Name:\t%s\n", e.Name)
				fmt.Fprintf(t, "Description:\t%s\n", orDash(e.Description))
				fmt.Fprintf(t, "State:\t%s\n", e.State)
				fmt.Fprintf(t, "Certificate:\t%s\n", orDash(e.CertFingerprint))
				if e.CertFingerprint != "" {
					fmt.Fprintf(t, "Certificate serial:\t%s\n", e.CertSerial)
					fmt.Fprintf(t, "Certificate expires:\t%s\n", fmtTimePtr(e.CertNotAfter))
				}
				fmt.Fprintf(t, "Created:\t%s by %s\n", fmtTime(e.Created), orDash(e.CreatedBy))
				if e.Revoked != nil {
					fmt.Fprintf(t, "Revoked:\t%s\n", fmtTime(*e.Revoked))
				}
				ws := make([]string, 0, len(grants))
				for w, p := range grants {
					ws = append(ws, w+"="+p)
				}
				slices.Sort(ws)
				fmt.Fprintf(t, "Grants:\t%s\n", orDash(strings.Join(ws, ", ")))
				return t.Flush()
			})
		},
	}
}

func newEndpointRevokeCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke an endpoint: its token and certificate stop working, its grants go",
		Long: `Revoke an endpoint. Its token and client certificate are refused from now
on (the certificate at the TLS handshake, on every node) and its wallet
grants are removed. The name can be enrolled again later
(with new credentials).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				e, err := c.RevokeEndpoint(ctx, args[0])
				if err != nil {
					return err
				}
				return g.printResult(cmd, e, "endpoint %s revoked\n", e.Name)
			})
		},
	}
}

func newEndpointGrantCmd(g *globals) *cobra.Command {
	var wallet, perm string
	var remove bool
	cmd := &cobra.Command{
		Use:   "grant NAME --wallet W (--permission P | --remove)",
		Short: "Give an endpoint read, read_modify or manage on a wallet, or take it away",
		Long: `Set an endpoint's permission on a wallet, replacing any earlier one:
  read         get objects and their material, list
  read_modify  also create, rotate, activate, set attributes
  manage       also deactivate, revoke and destroy
--remove takes the endpoint's permission on the wallet away.`,
		Example: `  coffer endpoint grant db1 --wallet db-prod --permission read_modify
  coffer endpoint grant db1 --wallet db-prod --remove`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case wallet == "":
				return errors.New("--wallet W is required")
			case remove && perm != "":
				return errors.New("give either --permission or --remove, not both")
			case !remove && perm == "":
				return errors.New("give --permission read|read_modify|manage, or --remove")
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				var (
					w   client.Wallet
					err error
				)
				if remove {
					w, err = c.RevokeGrant(ctx, wallet, args[0])
				} else {
					w, err = c.Grant(ctx, wallet, args[0], perm)
				}
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, w)
				}
				if remove {
					fmt.Fprintf(cmd.OutOrStdout(), "endpoint %s has no permission on wallet %s\n", args[0], wallet)
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "endpoint %s has %s on wallet %s\n", args[0], w.Grants[args[0]], wallet)
				}
				return nil
			})
		},
	}
	cmd.Flags().StringVarP(&wallet, "wallet", "w", "", "the wallet (required)")
	cmd.Flags().StringVar(&perm, "permission", "", "read, read_modify or manage")
	cmd.Flags().BoolVar(&remove, "remove", false, "take the endpoint's permission on the wallet away")
	permissionCompletion(cmd)
	return cmd
}

package cli

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/fsutil"
)

func newEndpointRenewCmd(g *globals) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "renew NAME --dir DIR",
		Short: "Give an endpoint a new key and client certificate, keeping its token and grants",
		Long: `Renew the client certificate of the enrolled endpoint NAME, in the directory
DIR that "coffer endpoint enroll" wrote (run it where DIR is). A new ECDSA
P-256 key is generated in DIR, the server signs a certificate for it, and
DIR's key and certificate files are replaced. The endpoint keeps its token
and its wallet grants. The previous certificate is refused from then on at
every TLS handshake (HTTPS and KMIP), on every node of a cluster.

Use it before the certificate expires (coffer endpoint show NAME), or when
the old key may have leaked. Copies of DIR elsewhere must be replaced.

A renewal cut off after the server signed (a crash, a full disk) leaves
the new files as KEY.new and CERT.new in DIR: running the same command again
puts them in place instead of renewing once more.`,
		Example: `  coffer endpoint renew db1 --dir ./db1-credentials`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if dir == "" {
				return errors.New("--dir DIR is required: the endpoint's enrolled directory")
			}
			ec := client.EnrollmentConfig{ClientCert: enrollCertFile, ClientKey: enrollKeyFile}
			cfgPath := filepath.Join(dir, client.EnrollmentConfigFile)
			if b, err := os.ReadFile(cfgPath); err != nil {
				return fmt.Errorf("%s: not an enrolled directory: %w", dir, err)
			} else if err := json.Unmarshal(b, &ec); err != nil {
				return fmt.Errorf("%s: %w", cfgPath, err)
			}
			if ec.Endpoint != "" && ec.Endpoint != name {
				return fmt.Errorf("%s belongs to endpoint %q, not %q", dir, ec.Endpoint, name)
			}
			certFile, keyFile := ec.ClientCert, ec.ClientKey
			if certFile == "" || keyFile == "" {
				certFile, keyFile = enrollCertFile, enrollKeyFile
			}
			if finished, err := finishRenewal(dir, certFile, keyFile); err != nil {
				return err
			} else if finished {
				fmt.Fprintf(cmd.OutOrStdout(), "endpoint %s: the renewal interrupted earlier is finished: its new key and certificate are in place in %s (run the command again for another renewal)\n", name, dir)
				return nil
			}
			key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			if err != nil {
				return err
			}
			kder, err := x509.MarshalPKCS8PrivateKey(key)
			if err != nil {
				return err
			}
			csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
			if err != nil {
				return fmt.Errorf("certificate request: %w", err)
			}
			// The new key is on disk before the server replaces the
			// certificate, so that a failure after the call loses nothing.
			newKey := filepath.Join(dir, keyFile+".new")
			if err := fsutil.WriteFile(newKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})); err != nil {
				return fmt.Errorf("write the new key: %w", err)
			}
			var enr client.Enrollment
			err = g.withClient(func(ctx context.Context, c *client.Client) error {
				var err error
				enr, err = c.RenewEndpoint(ctx, name, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})))
				return err
			})
			if err != nil {
				return removeAfter(newKey, "new private key", err)
			}
			failed := func(err error) error {
				return fmt.Errorf("endpoint %s was renewed but its files could not be replaced in %s: %w (the new key is %s; the certificate is below; once the cause is fixed, the same command finishes the renewal from the .new files)\n%s", name, dir, err, newKey, enr.Certificate)
			}
			if err := fsutil.WriteFile(filepath.Join(dir, certFile+".new"), []byte(enr.Certificate)); err != nil {
				return failed(err)
			}
			// The same steps as finishing an interrupted renewal: the key,
			// then the certificate, checked to be a pair, then the directory.
			if _, err := finishRenewal(dir, certFile, keyFile); err != nil {
				return failed(err)
			}
			return g.printResult(cmd, enr.Endpoint, "endpoint %s renewed: new key and certificate in %s%s; the previous certificate is refused from now on\n", name, dir, certExpiry(enr.Endpoint))
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the endpoint's enrolled directory (written by coffer endpoint enroll)")
	return cmd
}

// finishRenewal completes a renewal cut off between its writes in dir: a
// certFile.new left there goes in place with the key it belongs to
// (keyFile.new, or keyFile when that was renamed already). A keyFile.new
// without a certificate (the server's answer never arrived) is removed: a
// new renewal follows. finished reports that a pair was put in place.
func finishRenewal(dir, certFile, keyFile string) (finished bool, err error) {
	certPath, keyPath := filepath.Join(dir, certFile), filepath.Join(dir, keyFile)
	certNew, keyNew := certPath+".new", keyPath+".new"
	cb, err := os.ReadFile(certNew) // #nosec G304 -- the enrolled directory the operator named
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.Remove(keyNew); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Errorf("remove %s, left by an interrupted renewal: %w", keyNew, err)
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s, left by an interrupted renewal: %w", certNew, err)
	}
	goes := func(file string) bool {
		kb, err := os.ReadFile(file) // #nosec G304 -- the enrolled directory the operator named
		defer clear(kb)
		if err != nil {
			return false
		}
		_, err = tls.X509KeyPair(cb, kb)
		return err == nil
	}
	if goes(keyNew) {
		if err := os.Rename(keyNew, keyPath); err != nil {
			return false, fmt.Errorf("put %s in place: %w", keyNew, err)
		}
	} else if !goes(keyPath) {
		return false, fmt.Errorf("%s, left by an interrupted renewal, goes with no key in %s: remove it and renew again", certNew, dir)
	}
	if err := os.Rename(certNew, certPath); err != nil {
		return false, fmt.Errorf("put %s in place: %w", certNew, err)
	}
	if err := os.Remove(keyNew); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("remove %s: %w", keyNew, err)
	}
	if err := fsutil.SyncDir(dir); err != nil {
		return false, err
	}
	return true, nil
}

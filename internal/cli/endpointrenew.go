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
the old key may have leaked. Copies of DIR elsewhere must be replaced.`,
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
				return fmt.Errorf("endpoint %s was renewed but its files could not be replaced in %s: %w (the new key is %s; the certificate is below)\n%s", name, dir, err, newKey, enr.Certificate)
			}
			if err := fsutil.WriteFile(filepath.Join(dir, certFile+".new"), []byte(enr.Certificate)); err != nil {
				return failed(err)
			}
			if err := os.Rename(newKey, filepath.Join(dir, keyFile)); err != nil {
				return failed(err)
			}
			if err := os.Rename(filepath.Join(dir, certFile+".new"), filepath.Join(dir, certFile)); err != nil {
				return failed(err)
			}
			return g.printResult(cmd, enr.Endpoint, "endpoint %s renewed: new key and certificate in %s%s; the previous certificate is refused from now on\n", name, dir, certExpiry(enr.Endpoint))
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the endpoint's enrolled directory (written by coffer endpoint enroll)")
	return cmd
}

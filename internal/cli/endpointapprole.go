package cli

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
)

func newEndpointAppRoleCmd(g *globals) *cobra.Command {
	var (
		ttl    time.Duration
		uses   int
		revoke bool
	)
	cmd := &cobra.Command{
		Use:   "approle NAME",
		Short: "Issue an endpoint a role_id / secret_id pair for Vault's AppRole login",
		Long: `Issue the enrolled endpoint NAME a secret_id for the Vault API's
auth/approle/login (hvac's auth.approle.login, vault write auth/approle/login).
The role_id is the endpoint's name. A login returns a token with the
endpoint's grants that expires after an hour; the secret_id itself never
authenticates a request.

The secret_id is printed once and stored only as its SHA-256. It expires
after --ttl and, with --uses N, allows N logins. Revoking the endpoint
revokes its secret_ids; --revoke revokes them all and keeps the endpoint.`,
		Example: `  coffer endpoint approle app1 --ttl 720h --uses 10
  coffer endpoint approle app1 --revoke`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if revoke {
				if cmd.Flags().Changed("ttl") || cmd.Flags().Changed("uses") {
					return errors.New("--revoke takes neither --ttl nor --uses")
				}
				var n int
				err := g.withClient(func(ctx context.Context, c *client.Client) error {
					var err error
					n, err = c.RevokeAppRole(ctx, name)
					return err
				})
				if err != nil {
					return err
				}
				return g.printResult(cmd, map[string]int{"revoked": n}, "revoked %d AppRole secret_id(s) of endpoint %s", n, name)
			}
			if uses < 0 {
				return fmt.Errorf("--uses %d: use 0 (unlimited) or more", uses)
			}
			var sec client.AppRoleSecret
			err := g.withClient(func(ctx context.Context, c *client.Client) error {
				var err error
				sec, err = c.IssueAppRole(ctx, name, ttl, uses)
				return err
			})
			if err != nil {
				return err
			}
			limit := "unlimited"
			if sec.Uses > 0 {
				limit = fmt.Sprint(sec.Uses)
			}
			return g.printResult(cmd, sec, "role_id:    %s\nsecret_id:  %s\naccessor:   %s\nexpires:    %s\nuses:       %s\nThe secret_id is shown only now; store it where the application reads it.",
				sec.RoleID, sec.SecretID, sec.Accessor, sec.Expires.Format(time.RFC3339), limit)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the secret_id is valid (1m to 8784h)")
	f.IntVar(&uses, "uses", 0, "logins the secret_id allows (0: unlimited)")
	f.BoolVar(&revoke, "revoke", false, "revoke every secret_id of the endpoint instead")
	return cmd
}

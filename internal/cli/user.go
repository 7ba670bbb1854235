package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
)

const rolesHelp = `Roles:
  system_admin   keystore, backups, cluster, settings and users
  key_admin      wallets, endpoints and the objects of every wallet
  audit_manager  read and verify the audit log`

func roleCompletion(cmd *cobra.Command) {
	cmd.RegisterFlagCompletionFunc("role", fixedCompletion(client.RoleSystemAdmin, client.RoleKeyAdmin, client.RoleAuditManager))
}

func printUser(cmd *cobra.Command, u client.User) error {
	t := newTable(cmd)
	fmt.Fprintf(t, "Name:\t%s\n", u.Name)
	fmt.Fprintf(t, "Roles:\t%s\n", orDash(strings.Join(u.Roles, ", ")))
	fmt.Fprintf(t, "Disabled:\t%v\n", u.Disabled)
	fmt.Fprintf(t, "Created:\t%s\n", fmtTime(u.Created))
	fmt.Fprintf(t, "Updated:\t%s\n", fmtTime(u.Updated))
	return t.Flush()
}

func newUserCmd(g *globals) *cobra.Command {
	u := &cobra.Command{
		Use:   "user",
		Short: "Manage administrators: roles, passwords, disabling",
		Long: `Administrators log in with "coffer login" and act with their roles. Users
are managed by system administrators; every user may change their own
password ("coffer user passwd").

` + rolesHelp,
	}
	var roles []string
	var passFile string
	create := &cobra.Command{
		Use:   "create NAME --role ROLE [--role ROLE...]",
		Short: "Create an administrator with roles and a password",
		Long: `Create an administrator. The password (10 to 1024 bytes) is read from
--password-file (- for stdin) or asked twice on the terminal.

` + rolesHelp,
		Example: `  coffer user create alice --role key_admin
  coffer user create audit --role audit_manager --password-file pw.txt`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(roles) == 0 {
				return errors.New("give at least one --role: system_admin, key_admin or audit_manager")
			}
			pw, err := readPassword(cmd, passFile, "--password-file", "Password for "+args[0], true)
			if err != nil {
				return err
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				usr, err := c.CreateUser(ctx, args[0], string(pw), roles)
				if err != nil {
					return err
				}
				return g.printResult(cmd, usr, "user %s created with roles %s\n", usr.Name, strings.Join(usr.Roles, ", "))
			})
		},
	}
	create.Flags().StringSliceVarP(&roles, "role", "r", nil, "role: system_admin, key_admin or audit_manager (repeatable)")
	create.Flags().StringVar(&passFile, "password-file", "", "read the password from this file (- for stdin)")
	roleCompletion(create)

	list := &cobra.Command{
		Use:   "list",
		Short: "List administrators",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				us, err := collect(c.Users(ctx))
				if err != nil {
					return err
				}
				return printList(g, cmd, us, "NAME\tROLES\tDISABLED\tCREATED", func(u client.User) string {
					return fmt.Sprintf("%s\t%s\t%v\t%s", u.Name, orDash(strings.Join(u.Roles, ",")), u.Disabled, fmtTime(u.Created))
				})
			})
		},
	}
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show an administrator",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				usr, err := c.GetUser(ctx, args[0])
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, usr)
				}
				return printUser(cmd, usr)
			})
		},
	}
	var yes bool
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an administrator and end their sessions",
		Long:  "Delete an administrator and end their sessions. Asks for confirmation on a terminal; give --yes in scripts.",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := confirmAction(cmd, yes, fmt.Sprintf("Delete user %s?", args[0])); err != nil {
				return err
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				if err := c.DeleteUser(ctx, args[0]); err != nil {
					return err
				}
				return g.printResult(cmd, deletedJSON(args[0]), "user %s deleted\n", args[0])
			})
		},
	}
	del.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")

	var setRoles []string
	setRolesCmd := &cobra.Command{
		Use:     "set-roles NAME --role ROLE [--role ROLE...]",
		Short:   "Replace an administrator's roles",
		Long:    "Replace the roles of an administrator (system_admin only).\n\n" + rolesHelp,
		Example: `  coffer user set-roles alice --role key_admin --role audit_manager`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(setRoles) == 0 {
				return errors.New("give at least one --role")
			}
			return updateUser(g, cmd, args[0], client.UserChange{Roles: &setRoles}, "roles set")
		},
	}
	setRolesCmd.Flags().StringSliceVarP(&setRoles, "role", "r", nil, "role (repeatable)")
	roleCompletion(setRolesCmd)

	var newFile, oldFile string
	passwd := &cobra.Command{
		Use:   "passwd [NAME]",
		Short: "Change a password (your own without NAME)",
		Long: `Change the password of NAME, or your own without NAME. Changing your own
password needs the current one (--old-password-file, or asked on the
terminal); system administrators set other users' passwords without it.
The new password is read from --password-file or asked twice. A new
password ends every session of the user: log in again afterwards.`,
		Example: `  coffer user passwd
  coffer user passwd bob --password-file new.txt`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := oneStdin(oldFile, "--old-password-file", newFile, "--password-file"); err != nil {
				return err
			}
			cn, err := g.resolve()
			if err != nil {
				return err
			}
			c, err := client.New(cn.cfg)
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx()
			defer cancel()
			me, err := c.WhoAmI(ctx)
			if err != nil {
				return err
			}
			name := me.Name
			if len(args) == 1 {
				name = args[0]
			} else if me.Kind != "user" {
				return fmt.Errorf("you are %s %q, not a user: give the user NAME", me.Kind, me.Name)
			}
			var ch client.UserChange
			if me.Kind == "user" && me.Name == name {
				old, err := readPassword(cmd, oldFile, "--old-password-file", "Current password", false)
				if err != nil {
					return err
				}
				o := string(old)
				ch.OldPassword = &o
			}
			pw, err := readPassword(cmd, newFile, "--password-file", "New password for "+name, true)
			if err != nil {
				return err
			}
			p := string(pw)
			ch.Password = &p
			usr, err := c.UpdateUser(ctx, name, ch)
			if err != nil {
				return err
			}
			// A new password ends the user's sessions, this one too.
			self := me.Kind == "user" && me.Name == name
			if self && cn.tokenFromFile != "" {
				if err := os.Remove(cn.tokenFromFile); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: the ended session's token file could not be removed: %v\n", err)
				}
			}
			if g.format == "json" {
				return g.printJSON(cmd, usr)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "password of %s changed; every session of %s has ended\n", usr.Name, usr.Name)
			if self {
				fmt.Fprintln(cmd.OutOrStdout(), "log in again: coffer login --username "+usr.Name)
			}
			return nil
		},
	}
	passwd.Flags().StringVar(&newFile, "password-file", "", "read the new password from this file (- for stdin)")
	passwd.Flags().StringVar(&oldFile, "old-password-file", "", "read your current password from this file (- for stdin)")

	disable := &cobra.Command{
		Use:   "disable NAME",
		Short: "Disable an administrator: logins and sessions are refused",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			t := true
			return updateUser(g, cmd, args[0], client.UserChange{Disabled: &t}, "disabled")
		},
	}
	enable := &cobra.Command{
		Use:   "enable NAME",
		Short: "Enable a disabled administrator",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := false
			return updateUser(g, cmd, args[0], client.UserChange{Disabled: &f}, "enabled")
		},
	}
	u.AddCommand(create, list, show, del, setRolesCmd, passwd, disable, enable)
	return u
}

func updateUser(g *globals, cmd *cobra.Command, name string, ch client.UserChange, done string) error {
	return g.withClient(func(ctx context.Context, c *client.Client) error {
		usr, err := c.UpdateUser(ctx, name, ch)
		if err != nil {
			return err
		}
		return g.printResult(cmd, usr, "user %s %s (roles %s, disabled %v)\n", usr.Name, done, orDash(strings.Join(usr.Roles, ", ")), usr.Disabled)
	})
}

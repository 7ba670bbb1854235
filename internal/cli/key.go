package cli

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
	"github.com/coffer-kms/coffer/internal/fsutil"
)

const refHelp = `REF is an object id (UUID) or an object name in --wallet (default "default").`

func newKeyCmd(g *globals) *cobra.Command {
	k := &cobra.Command{
		Use:   "key",
		Short: "Create, read, list, rotate and retire security objects (keys, key pairs, secret data)",
		Long: `Security objects live in wallets. Each has a type (symmetric_key,
secret_data or key_pair), versions of its material (rotation adds one), custom
attributes, and a KMIP lifecycle state:

  activate    pre-active -> active
  deactivate  pre-active or active -> deactivated (still readable)
  revoke      pre-active, active or deactivated -> compromised
  destroy     deactivated or compromised -> destroyed (material erased)

Key administrators may act on every wallet; an endpoint needs a grant on the
wallet: read (get, list), read_modify (create, rotate, activate, attributes)
or manage (deactivate, revoke, destroy).

` + refHelp,
	}
	k.AddCommand(newKeyCreateCmd(g), newKeyGetCmd(g), newKeyListCmd(g), newKeyRotateCmd(g), newKeyVersionsCmd(g), newKeySetAttrCmd(g))
	for _, t := range []struct{ name, short, long string }{
		{"activate", "Activate a pre-active object (pre-active to active)", "Make a pre-active object active, so that it may protect new data."},
		{"deactivate", "Deactivate an object: it stays readable but no longer protects new data",
			"Take an object out of use: its material can still be read (to decrypt old data)\nbut it must not protect new data. A deactivated object can be destroyed."},
		{"revoke", "Mark an object compromised", "Mark an object compromised: its material is suspected to be known to others.\nIt stays readable (to decrypt and re-encrypt old data) and can be destroyed."},
		{"destroy", "Erase an object's material (deactivated or compromised objects only)", `Erase the material of every version of an object from the live state; the
metadata stays and reads of the material fail with "destroyed". Only a
deactivated or compromised object can be destroyed: deactivate (or revoke) it
first. This cannot be undone here, but backups taken before the destruction
still hold the material until they expire under their retention: destroy or
age out those backups too when the material must be gone everywhere.
Asks for confirmation on a terminal; give --yes in scripts.`},
	} {
		k.AddCommand(newKeyTransitionCmd(g, t.name, t.short, t.long))
	}
	return k
}

func addWalletFlag(cmd *cobra.Command, wallet *string) {
	cmd.Flags().StringVarP(wallet, "wallet", "w", defaultWallet, "wallet of the object (for names)")
}

func newKeyCreateCmd(g *globals) *cobra.Command {
	var (
		wallet, typ, alg, valueFile string
		length                      int
		attrs                       []string
		preActive                   bool
	)
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create a symmetric key, key pair or secret-data object",
		Long: `Create a security object with its first version. The server generates
the material unless --value-file gives it (secret data: required; symmetric
key: an AES key to import, 16, 24 or 32 bytes).

  --type symmetric_key  --algorithm AES (default), --length 128|192|256 (default 256)
  --type key_pair       --algorithm RSA (--length 2048|3072|4096, default 3072)
                        or EC (--length 256|384, default 256)
  --type secret_data    --value-file FILE (or - for stdin), up to 64 KiB

The object is active, or pre-active with --pre-active (activate it later with
"coffer key activate").`,
		Example: `  coffer key create db1/tde --type symmetric_key
  coffer key create app/signing --type key_pair --algorithm EC --length 384 --wallet apps
  printf 's3cret' | coffer key create app/db-password --type secret_data --value-file -
  coffer key create db1/next --type symmetric_key --pre-active --attr owner=dba --attr env=prod`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if typ == "" {
				return errors.New("--type is required: symmetric_key, secret_data or key_pair")
			}
			a, err := parseAttrs(attrs)
			if err != nil {
				return err
			}
			val, err := readValue(cmd, "", valueFile, false)
			if err != nil {
				return err
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				o, err := c.CreateObject(ctx, client.CreateObjectRequest{Wallet: wallet, Name: args[0], Type: typ, Algorithm: alg,
					Length: length, Value: val, Attributes: a, PreActive: preActive})
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, o)
				}
				w := newTable(cmd)
				printObject(w, o)
				return w.Flush()
			})
		},
	}
	addWalletFlag(cmd, &wallet)
	f := cmd.Flags()
	f.StringVarP(&typ, "type", "t", "", "object type: symmetric_key, secret_data or key_pair (required)")
	f.StringVar(&alg, "algorithm", "", "AES (symmetric_key); RSA or EC (key_pair)")
	f.IntVar(&length, "length", 0, "key length in bits (default: the algorithm's)")
	f.StringVar(&valueFile, "value-file", "", "read the value from this file (- for stdin)")
	f.StringArrayVar(&attrs, "attr", nil, "custom attribute key=value (repeatable)")
	f.BoolVar(&preActive, "pre-active", false, "create in state pre-active instead of active")
	cmd.RegisterFlagCompletionFunc("type", fixedCompletion(client.TypeSymmetricKey, client.TypeSecretData, client.TypeKeyPair))
	cmd.RegisterFlagCompletionFunc("algorithm", fixedCompletion("AES", "RSA", "EC"))
	return cmd
}

func newKeyGetCmd(g *globals) *cobra.Command {
	var (
		wallet, out, encoding string
		version               uint64
		metaOnly              bool
	)
	cmd := &cobra.Command{
		Use:   "get REF",
		Short: "Show an object's metadata and the material of a version",
		Long: `Show an object's metadata and the material of its latest version (or
--version N): the raw key of a symmetric key, the value of secret data, the
PKCS#8 DER private key of a key pair (its PKIX DER public key is shown too).

The material is printed in --encoding base64 (default) or hex; --out FILE
writes it to FILE (mode 0600) instead of the terminal, also raw.
--metadata-only reads no material at all. A destroyed object's material is
gone: the error says when it was destroyed.

` + refHelp,
		Example: `  coffer key get db1/tde
  coffer key get db1/tde --version 2 --encoding hex
  coffer key get 1b4e28ba-2fa1-4d3b-a3f5-ef1f5b2c9d10 --metadata-only
  coffer key get app/db-password --out /run/secrets/db-password --encoding raw`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if encoding == "raw" && out == "" {
				return errors.New("--encoding raw needs --out FILE (binary material is not printed on the terminal)")
			}
			if _, err := encodeValue(nil, encoding); err != nil {
				return err
			}
			if metaOnly && (version != 0 || out != "") {
				return errors.New("--metadata-only reads no material: it goes with neither --version nor --out")
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				var (
					r   client.ObjectWithMaterial
					err error
				)
				switch {
				case metaOnly && isObjectID(args[0]):
					r.Object, err = c.DescribeObject(ctx, args[0])
				case metaOnly:
					r.Object, err = c.DescribeObjectByName(ctx, wallet, args[0])
				case isObjectID(args[0]):
					r, err = c.GetObject(ctx, args[0], version)
				default:
					r, err = c.GetObjectByName(ctx, wallet, args[0], version)
				}
				if err != nil {
					return err
				}
				if out != "" && r.Material != nil {
					enc, err := encodeValue(r.Material.Value, encoding)
					if err != nil {
						return err
					}
					if encoding != "raw" {
						enc = append(enc, '\n')
					}
					if err := fsutil.WriteFile(out, enc); err != nil {
						return fmt.Errorf("write %s: %w", out, err)
					}
				}
				if g.format == "json" {
					if out != "" && r.Material != nil {
						r.Material.Value = nil
						return g.printJSON(cmd, map[string]any{"object": r.Object, "material": r.Material, "written_to": out, "encoding": encoding})
					}
					return g.printJSON(cmd, r)
				}
				w := newTable(cmd)
				printObject(w, r.Object)
				if m := r.Material; m != nil {
					fmt.Fprintf(w, "Version:\t%d\n", m.Version)
					if len(m.PublicKey) > 0 {
						fmt.Fprintf(w, "Public key:\t%s\n", base64.StdEncoding.EncodeToString(m.PublicKey))
					}
					if out != "" {
						fmt.Fprintf(w, "Value:\twritten to %s (%d bytes, %s)\n", out, len(m.Value), encoding)
					} else {
						enc, _ := encodeValue(m.Value, encoding)
						fmt.Fprintf(w, "Value (%s):\t%s\n", encoding, enc)
					}
				}
				return w.Flush()
			})
		},
	}
	addWalletFlag(cmd, &wallet)
	f := cmd.Flags()
	f.Uint64Var(&version, "version", 0, "version to read (default latest)")
	f.BoolVar(&metaOnly, "metadata-only", false, "show the metadata only; read no material")
	f.StringVarP(&out, "out", "o", "", "write the material to this file (mode 0600) instead of printing it")
	f.StringVar(&encoding, "encoding", "base64", "material encoding: base64, hex, or raw (with --out only)")
	cmd.RegisterFlagCompletionFunc("encoding", fixedCompletion("base64", "hex", "raw"))
	return cmd
}

func newKeyListCmd(g *globals) *cobra.Command {
	var (
		q        client.Query
		attrs    []string
		limit    int
		pageSize int
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List and search objects by wallet, name, type, state and attributes",
		Long: `List the objects the caller may read (an endpoint: those in wallets it
has a grant on), in id order, following the server's pages (object ids are
time-ordered UUIDv7: an object created later lists later). Filters combine:
--name takes an exact name or a prefix ending in *; --attr k=v may repeat and
all must match. --limit N stops after N objects (default: all).`,
		Example: `  coffer key list
  coffer key list --wallet db1 --type symmetric_key --state active
  coffer key list --name 'db1/*' --attr env=prod --format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var err error
			if q.Attributes, err = parseAttrs(attrs); err != nil {
				return err
			}
			if limit < 0 {
				return errors.New("--limit must be 0 (all) or more")
			}
			q.Limit = pageSize
			if q.Limit == 0 {
				q.Limit = 1000
				if limit > 0 && limit < q.Limit {
					q.Limit = limit
				}
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				objs := []client.Object{}
				for o, err := range c.Objects(ctx, q) {
					if err != nil {
						return err
					}
					objs = append(objs, o)
					if limit > 0 && len(objs) == limit {
						break
					}
				}
				return printList(g, cmd, objs, "ID\tWALLET\tNAME\tTYPE\tALGORITHM\tSTATE\tLATEST", func(o client.Object) string {
					return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%d", o.ID, o.Wallet, o.Name, o.Type, algorithmOf(o), o.State, o.Latest)
				})
			})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&q.Wallet, "wallet", "w", "", "only this wallet (default: every wallet the caller may read)")
	f.StringVar(&q.Name, "name", "", "exact name, or a prefix ending in *")
	f.StringVarP(&q.Type, "type", "t", "", "symmetric_key, secret_data or key_pair")
	f.StringVar(&q.State, "state", "", "pre-active, active, deactivated, compromised or destroyed")
	f.StringArrayVar(&attrs, "attr", nil, "attribute key=value that must match (repeatable)")
	f.IntVar(&limit, "limit", 0, "list at most N objects (default all)")
	f.IntVar(&pageSize, "page-size", 0, "objects per request (default: up to 1000)")
	f.MarkHidden("page-size")
	cmd.RegisterFlagCompletionFunc("type", fixedCompletion(client.TypeSymmetricKey, client.TypeSecretData, client.TypeKeyPair))
	cmd.RegisterFlagCompletionFunc("state", fixedCompletion(client.StatePreActive, client.StateActive, client.StateDeactivated, client.StateCompromised, client.StateDestroyed))
	return cmd
}

func newKeyRotateCmd(g *globals) *cobra.Command {
	var wallet, valueFile string
	cmd := &cobra.Command{
		Use:   "rotate REF",
		Short: "Add a new version of an object's material",
		Long: `Add a version: fresh material of the same type, algorithm and length,
or the value in --value-file (secret data: required; symmetric key: an AES
key of the same length to import). Earlier versions stay readable with
"coffer key get REF --version N". Only pre-active and active objects rotate.

` + refHelp,
		Example: `  coffer key rotate db1/tde
  coffer key rotate app/db-password --value-file new-password.txt`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			val, err := readValue(cmd, "", valueFile, false)
			if err != nil {
				return err
			}
			return g.withObject(wallet, args[0], func(ctx context.Context, c *client.Client, id string) error {
				o, err := c.RotateObject(ctx, id, val)
				if err != nil {
					return err
				}
				return g.printResult(cmd, o, "%s in wallet %s (%s): version %d\n", o.Name, o.Wallet, o.ID, o.Latest)
			})
		},
	}
	addWalletFlag(cmd, &wallet)
	cmd.Flags().StringVar(&valueFile, "value-file", "", "the new value (- for stdin)")
	return cmd
}

func newKeyTransitionCmd(g *globals, name, short, long string) *cobra.Command {
	var wallet, reason string
	var yes bool
	cmd := &cobra.Command{
		Use:     name + " REF",
		Short:   short,
		Long:    long + "\n\n" + refHelp,
		Example: fmt.Sprintf("  coffer key %s db1/tde --reason 'replaced by db1/tde-2025'", name),
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withObject(wallet, args[0], func(ctx context.Context, c *client.Client, id string) error {
				if name == "destroy" {
					if err := confirmAction(cmd, yes, fmt.Sprintf("Destroy the material of every version of %s (%s)?", args[0], id)); err != nil {
						return err
					}
				}
				fn := map[string]func(context.Context, string, string) (client.Object, error){
					"activate": c.ActivateObject, "deactivate": c.DeactivateObject, "revoke": c.RevokeObject, "destroy": c.DestroyObject,
				}[name]
				o, err := fn(ctx, id, reason)
				if err != nil {
					return err
				}
				return g.printResult(cmd, o, "%s in wallet %s (%s): %s\n", o.Name, o.Wallet, o.ID, o.State)
			})
		},
	}
	addWalletFlag(cmd, &wallet)
	cmd.Flags().StringVar(&reason, "reason", "", "why (kept with the object and in the audit log)")
	if name == "destroy" {
		cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	}
	return cmd
}

func newKeyVersionsCmd(g *globals) *cobra.Command {
	var wallet string
	cmd := &cobra.Command{
		Use:   "versions REF",
		Short: "List an object's versions",
		Long:  "List the versions of an object's material, oldest first.\n\n" + refHelp,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withObject(wallet, args[0], func(ctx context.Context, c *client.Client, id string) error {
				vl, err := c.ObjectVersions(ctx, id)
				if err != nil {
					return err
				}
				if g.format == "json" {
					return g.printJSON(cmd, vl)
				}
				w := newTable(cmd)
				fmt.Fprintln(w, "VERSION\tCREATED\tSTATUS")
				for _, v := range vl.Versions {
					var st []string
					if v.Version == vl.Latest {
						st = append(st, "latest")
					}
					if v.Destroyed {
						st = append(st, "destroyed")
					}
					fmt.Fprintf(w, "%d\t%s\t%s\n", v.Version, fmtTime(v.Created), orDash(strings.Join(st, ", ")))
				}
				return w.Flush()
			})
		},
	}
	addWalletFlag(cmd, &wallet)
	return cmd
}

func newKeySetAttrCmd(g *globals) *cobra.Command {
	var wallet string
	var del []string
	cmd := &cobra.Command{
		Use:   "set-attr REF [KEY=VALUE...]",
		Short: "Set and delete an object's custom attributes",
		Long: `Set custom attributes (KEY=VALUE) and delete others (--delete KEY).
Names: 1-128 characters from A-Z a-z 0-9 _ . : -; values up to 1024 bytes of
printable text. Attributes are searchable with "coffer key list --attr".

` + refHelp,
		Example: `  coffer key set-attr db1/tde owner=dba env=prod
  coffer key set-attr db1/tde --delete env`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := parseAttrs(args[1:])
			if err != nil {
				return err
			}
			if len(set) == 0 && len(del) == 0 {
				return errors.New("nothing to change: give KEY=VALUE arguments or --delete KEY")
			}
			return g.withObject(wallet, args[0], func(ctx context.Context, c *client.Client, id string) error {
				o, err := c.SetAttributes(ctx, id, set, del)
				if err != nil {
					return err
				}
				return g.printResult(cmd, o, "%s in wallet %s (%s) attributes: %s\n", o.Name, o.Wallet, o.ID, sortedAttrs(o.Attributes))
			})
		},
	}
	addWalletFlag(cmd, &wallet)
	cmd.Flags().StringArrayVar(&del, "delete", nil, "attribute to delete (repeatable)")
	return cmd
}

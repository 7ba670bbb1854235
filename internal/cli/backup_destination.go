package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/coffer-kms/coffer/client"
)

const destinationKindsHelp = `Types and their flags:
  dir    --path DIR [--mirror]      a directory on the server host (absolute)
         --mirror: every journal record is also written to
         DIR/mirror/<cluster-id> (<cluster-id>.<node-id> on each node of
         a cluster), fsynced before the write is acknowledged;
         at most one destination; if the mirror disk fails, writes continue
         and "coffer status" warns until it catches up
  sftp   --host H [--port 22] --user U --path DIR [--password-file F]
         without a password the server generates a key pair: the command
         prints the public key to add to ~/.ssh/authorized_keys of U on H.
         The server's host key is pinned at the first connection.
  s3     --endpoint HOST:PORT --bucket B [--prefix P] [--region R]
         --access-key A --secret-key-file F [--path-style]
         [--s3-ca-cert FILE] [--insecure (plain http, tests only)]
Every type:
  --recipient age1...   encrypt to these age X25519 public keys instead of
                        the recovery passphrase (repeatable)
  --archiving           also ship every closed journal segment here
  --keep-fulls N        keep the newest N full backups (and what builds on them)
  --keep-days D         keep backups D days
Secrets are read from files (- for stdin) and never shown again.`

// destinationOptions are the flags of destination add and edit. apply sets
// only the flags that were given, so edit changes only those.
type destinationOptions struct {
	kind                                 string
	path                                 string
	host, user, passwordFile             string
	port                                 int
	endpoint, bucket, prefix, region     string
	accessKey, secretKeyFile, caCertFile string
	pathStyle, insecure                  bool
	recipients                           []string
	archiving, mirror                    bool
	keepFulls, keepDays                  int
}

// destinationFlagKinds says which destination types take a flag.
var destinationFlagKinds = map[string][]string{
	"path":            {client.DestinationDir, client.DestinationSFTP},
	"mirror":          {client.DestinationDir},
	"host":            {client.DestinationSFTP},
	"port":            {client.DestinationSFTP},
	"user":            {client.DestinationSFTP},
	"password-file":   {client.DestinationSFTP},
	"endpoint":        {client.DestinationS3},
	"bucket":          {client.DestinationS3},
	"prefix":          {client.DestinationS3},
	"region":          {client.DestinationS3},
	"access-key":      {client.DestinationS3},
	"secret-key-file": {client.DestinationS3},
	"path-style":      {client.DestinationS3},
	"insecure":        {client.DestinationS3},
	"s3-ca-cert":      {client.DestinationS3},
}

func (o *destinationOptions) addFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.kind, "type", "", "destination type: dir, sftp or s3")
	f.StringVar(&o.path, "path", "", "dir: absolute directory on the server host; sftp: remote directory")
	f.StringVar(&o.host, "host", "", "sftp: server host name")
	f.IntVar(&o.port, "port", 0, "sftp: server port (default 22)")
	f.StringVar(&o.user, "user", "", "sftp: user name")
	f.StringVar(&o.passwordFile, "password-file", "", "sftp: read the password from this file (- for stdin); none: key authentication")
	f.StringVar(&o.endpoint, "endpoint", "", "s3: endpoint host:port")
	f.StringVar(&o.bucket, "bucket", "", "s3: bucket")
	f.StringVar(&o.prefix, "prefix", "", "s3: key prefix inside the bucket")
	f.StringVar(&o.region, "region", "", "s3: region")
	f.StringVar(&o.accessKey, "access-key", "", "s3: access key id")
	f.StringVar(&o.secretKeyFile, "secret-key-file", "", "s3: read the secret key from this file (- for stdin)")
	f.BoolVar(&o.pathStyle, "path-style", false, "s3: path-style requests (MinIO and most on-premises stores)")
	f.BoolVar(&o.insecure, "insecure", false, "s3: plain http, no TLS (tests only)")
	f.StringVar(&o.caCertFile, "s3-ca-cert", "", "s3: PEM file with the CA of the endpoint's certificate")
	f.StringArrayVar(&o.recipients, "recipient", nil, "encrypt to this age X25519 public key (age1...) instead of the recovery passphrase (repeatable)")
	f.BoolVar(&o.archiving, "archiving", false, "also ship every closed journal segment here")
	f.BoolVar(&o.mirror, "mirror", false, "dir: also write every journal record to DIR/mirror/<cluster-id> (<cluster-id>.<node-id> per node in a cluster), fsynced before the write is acknowledged (at most one destination)")
	f.IntVar(&o.keepFulls, "keep-fulls", 0, "keep the newest N full backups (0: no limit)")
	f.IntVar(&o.keepDays, "keep-days", 0, "keep backups D days (0: no limit)")
	cmd.RegisterFlagCompletionFunc("type", fixedCompletion(client.DestinationDir, client.DestinationSFTP, client.DestinationS3))
}

// apply sets the given flags on cfg, whose Kind is already known, reading
// secret files. Flags of another type are refused.
func (o *destinationOptions) apply(cmd *cobra.Command, cfg *client.DestinationConfig) error {
	f := cmd.Flags()
	var wrong []string
	for name, kinds := range destinationFlagKinds {
		if f.Changed(name) && !slices.Contains(kinds, cfg.Kind) {
			wrong = append(wrong, "--"+name)
		}
	}
	if len(wrong) > 0 {
		slices.Sort(wrong)
		return fmt.Errorf("%s: not for %s destinations", strings.Join(wrong, ", "), cfg.Kind)
	}
	if o.passwordFile == "-" && o.secretKeyFile == "-" {
		return errors.New("only one secret can come from stdin")
	}
	set := func(name string, dst *string, v string) {
		if f.Changed(name) {
			*dst = v
		}
	}
	set("path", &cfg.Path, o.path)
	set("host", &cfg.Host, o.host)
	set("user", &cfg.User, o.user)
	set("endpoint", &cfg.Endpoint, o.endpoint)
	set("bucket", &cfg.Bucket, o.bucket)
	set("prefix", &cfg.Prefix, o.prefix)
	set("region", &cfg.Region, o.region)
	set("access-key", &cfg.AccessKey, o.accessKey)
	if f.Changed("port") {
		if o.port <= 0 || o.port > 65535 {
			return fmt.Errorf("--port %d: use 1 to 65535", o.port)
		}
		cfg.Port = o.port
	}
	if f.Changed("path-style") {
		cfg.PathStyle = o.pathStyle
	}
	if f.Changed("insecure") {
		cfg.Insecure = o.insecure
	}
	if f.Changed("archiving") {
		cfg.Archiving = o.archiving
	}
	if f.Changed("mirror") {
		cfg.Mirror = o.mirror
	}
	if f.Changed("keep-fulls") {
		if o.keepFulls < 0 {
			return errors.New("--keep-fulls must not be negative")
		}
		cfg.KeepFulls = o.keepFulls
	}
	if f.Changed("keep-days") {
		if o.keepDays < 0 {
			return errors.New("--keep-days must not be negative")
		}
		cfg.KeepDays = o.keepDays
	}
	if f.Changed("recipient") {
		// --recipient "" (alone) goes back to the recovery passphrase.
		cfg.Recipients = nil
		for _, r := range o.recipients {
			if r = strings.TrimSpace(r); r == "" {
				continue
			}
			if !strings.HasPrefix(r, "age1") {
				return fmt.Errorf("--recipient %q: not an age X25519 public key (age1...)", r)
			}
			cfg.Recipients = append(cfg.Recipients, r)
		}
	}
	if f.Changed("s3-ca-cert") {
		cfg.CACert = ""
		if o.caCertFile != "" {
			pem, err := os.ReadFile(o.caCertFile)
			if err != nil {
				return fmt.Errorf("read --s3-ca-cert: %w", err)
			}
			if !strings.Contains(string(pem), "-----BEGIN CERTIFICATE-----") {
				return fmt.Errorf("--s3-ca-cert %s: no PEM certificate in it", o.caCertFile)
			}
			cfg.CACert = string(pem)
		}
	}
	if o.passwordFile != "" {
		pw, err := readSecret(cmd, o.passwordFile, "", false, "password", "--password-file")
		if err != nil {
			return err
		}
		cfg.Password = string(pw)
		clear(pw)
	}
	if o.secretKeyFile != "" {
		sk, err := readSecret(cmd, o.secretKeyFile, "", false, "secret key", "--secret-key-file")
		if err != nil {
			return err
		}
		cfg.SecretKey = string(sk)
		clear(sk)
	}
	return nil
}

// destinationLocation is where a destination points, for people.
func destinationLocation(d client.Destination) string {
	if d.Location != "" {
		return d.Location
	}
	switch d.Kind {
	case client.DestinationSFTP:
		return fmt.Sprintf("sftp://%s@%s:%d/%s", d.User, d.Host, d.Port, strings.TrimPrefix(d.Path, "/"))
	case client.DestinationS3:
		return "s3://" + strings.TrimSuffix(d.Endpoint+"/"+d.Bucket+"/"+d.Prefix, "/")
	}
	return orDash(d.Path)
}

// printDestinationAdded tells what the operator must know after an add or
// edit: where it points, the key to install, the pinned host key. With
// --format json: the destination, and the note on stderr.
func printDestinationAdded(g *globals, cmd *cobra.Command, d client.Destination, verb string) error {
	if g.format == "json" {
		printNote(cmd, d.Note, true)
		return g.printJSON(cmd, d)
	}
	w := cmd.OutOrStdout()
	fmt.Fprintf(w, "destination %s %s: %s\n", d.Name, verb, destinationLocation(d))
	if d.Kind == client.DestinationSFTP {
		if d.PublicKey != "" && !d.SecretSet {
			fmt.Fprintf(w, "Key authentication: paste this line into ~/.ssh/authorized_keys of %s on %s:\n  %s\n", d.User, d.Host, d.PublicKey)
		}
		if d.HostKey != "" {
			fmt.Fprintf(w, "Host key of %s (pinned; a changed key is refused):\n  %s\n", d.Host, d.HostKey)
		}
	}
	if len(d.Recipients) > 0 {
		fmt.Fprintf(w, "Backups are encrypted to %d age recipient(s).\n", len(d.Recipients))
	} else {
		fmt.Fprintln(w, "Backups are encrypted to the recovery passphrase.")
	}
	if d.Archiving {
		fmt.Fprintln(w, "Closed journal segments are archived here.")
	}
	if d.Mirror {
		fmt.Fprintf(w, "Every journal record is also written to %s, fsynced before the write is acknowledged.\n", mirrorDir(d))
	}
	printNote(cmd, d.Note, false)
	return nil
}

// mirrorDir is where a dir destination mirrors the journal, for people.
func mirrorDir(d client.Destination) string {
	return strings.TrimSuffix(d.Path, "/") + "/mirror/<cluster-id>"
}

// printNote shows what the server says must still be done (such as
// installing a generated SFTP key, then testing), set apart so that it is
// not missed: last on stdout, or on stderr beside JSON.
func printNote(cmd *cobra.Command, note string, json bool) {
	switch {
	case note == "":
	case json:
		fmt.Fprintf(cmd.ErrOrStderr(), "NOTE: %s\n", note)
	default:
		fmt.Fprintf(cmd.OutOrStdout(), "\nNOTE: %s\n", note)
	}
}

func newDestinationCmd(g *globals) *cobra.Command {
	d := &cobra.Command{
		Use:   "destination",
		Short: "Add, edit, list, test and remove backup destinations",
		Long: `Destinations are where backups go. Adding or editing one writes, reads
back and deletes a probe file there first, and claims the destination's
catalog for this cluster (a destination of another cluster is refused).
LOCAL, under <data-dir>/backup/local, is built in.

` + destinationKindsHelp,
		Example: `  coffer backup destination add nas --type dir --path /mnt/nas/coffer --keep-fulls 4
  coffer backup destination list`,
	}
	d.AddCommand(newDestinationAddCmd(g), newDestinationEditCmd(g), newDestinationListCmd(g), newDestinationRmCmd(g), newDestinationTestCmd(g))
	return d
}

func newDestinationAddCmd(g *globals) *cobra.Command {
	o := &destinationOptions{}
	cmd := &cobra.Command{
		Use:   "add NAME --type dir|sftp|s3 [flags]",
		Short: "Add a backup destination after testing it",
		Long: `Add the destination NAME. The server writes, reads back and deletes a
probe file there before storing it. Backups to it are encrypted to the
recovery passphrase (which must be set) unless --recipient keys are given.

` + destinationKindsHelp,
		Example: `  coffer backup destination add nas --type dir --path /mnt/nas/coffer --keep-fulls 4 --archiving
  coffer backup destination add mirror --type dir --path /mnt/disk2/coffer --mirror
  coffer backup destination add vault --type sftp --host backup.example.com --user coffer --path /srv/coffer
  coffer backup destination add minio --type s3 --endpoint minio:9000 --bucket coffer --path-style \
      --access-key coffer --secret-key-file s3-secret --s3-ca-cert minio-ca.pem`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch o.kind {
			case "":
				return errors.New("--type is required: dir, sftp or s3")
			case client.DestinationDir, client.DestinationSFTP, client.DestinationS3:
			default:
				return fmt.Errorf("--type %q: use dir, sftp or s3", o.kind)
			}
			cfg := client.DestinationConfig{Name: args[0], Kind: o.kind}
			if err := o.apply(cmd, &cfg); err != nil {
				return err
			}
			if cfg.Kind == client.DestinationS3 && cfg.SecretKey == "" {
				sk, err := readSecret(cmd, "", "S3 secret key", false, "secret key", "--secret-key-file")
				if err != nil {
					return err
				}
				cfg.SecretKey = string(sk)
				clear(sk)
			}
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				v, err := c.AddDestination(ctx, cfg)
				if err != nil {
					return err
				}
				return printDestinationAdded(g, cmd, v, "added")
			})
		},
	}
	o.addFlags(cmd)
	return cmd
}

// findDestination returns the destination named name.
func findDestination(ds []client.Destination, name string) (client.Destination, error) {
	for _, d := range ds {
		if d.Name == name {
			return d, nil
		}
	}
	return client.Destination{}, fmt.Errorf("destination %q not found (see \"coffer backup destination list\")", name)
}

func newDestinationEditCmd(g *globals) *cobra.Command {
	o := &destinationOptions{}
	cmd := &cobra.Command{
		Use:   "edit NAME [flags]",
		Short: "Change a destination: only the flags given change",
		Long: `Change the destination NAME: the flags given replace those settings, the
others stay (secrets too, unless a new --password-file or --secret-key-file is
given). The type cannot change. The server tests the destination again
before storing the change. --recipient '' goes back to the recovery
passphrase; --archiving=false stops archiving; --mirror=false stops
mirroring the journal (--mirror turns it on, for a dir destination).

` + destinationKindsHelp,
		Example: `  coffer backup destination edit nas --keep-fulls 8
  coffer backup destination edit minio --secret-key-file new-secret
  coffer backup destination edit nas --archiving=false
  coffer backup destination edit nas --mirror=false`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			changed := false
			cmd.Flags().Visit(func(f *pflag.Flag) {
				if f.Name != "type" && cmd.LocalFlags().Lookup(f.Name) != nil {
					changed = true
				}
			})
			if !changed {
				return errors.New("nothing to change: give the flags to change (see --help)")
			}
			c, err := g.client()
			if err != nil {
				return err
			}
			ctx, cancel := g.ctx()
			ds, err := c.ListDestinations(ctx)
			cancel()
			if err != nil {
				return err
			}
			old, err := findDestination(ds, args[0])
			if err != nil {
				return err
			}
			if o.kind != "" && o.kind != old.Kind {
				return fmt.Errorf("destination %s is %s: the type cannot change (remove it and add a new one)", old.Name, old.Kind)
			}
			cfg := old.DestinationConfig
			if err := o.apply(cmd, &cfg); err != nil {
				return err
			}
			ctx, cancel = g.ctx()
			defer cancel()
			v, err := c.EditDestination(ctx, args[0], cfg)
			if err != nil {
				return err
			}
			return printDestinationAdded(g, cmd, v, "changed")
		},
	}
	o.addFlags(cmd)
	return cmd
}

func newDestinationListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List destinations with their archive state and disk use",
		Long: `List destinations: type (dir+mirror for the destination that mirrors the
journal), location, retention (the newest N fulls and what builds on them,
backups younger than N days, or all), archiving (on, paused or off), the closed journal
segments not archived yet, the disk use of dir and LOCAL destinations, when
a restore drill last succeeded and the restore time its measured speed
predicts for the newest backup chain (coffer backup drill), and the last
archive error.`,
		Example: "  coffer backup destination list --format json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				ds, err := c.ListDestinations(ctx)
				if err != nil {
					return err
				}
				return printList(g, cmd, ds, "NAME\tTYPE\tLOCATION\tRETENTION\tARCHIVING\tPENDING\tUSED\tLAST DRILL OK\tEST. RESTORE\tARCHIVE ERROR", func(d client.Destination) string {
					pending, used := "-", "-"
					if d.Archiving {
						pending = fmt.Sprint(d.Pending)
					}
					if d.Usage != nil {
						used = fmt.Sprintf("%.0f%%", d.Usage.UsedPercent)
					}
					kind := d.Kind
					if d.Mirror {
						kind += "+mirror"
					}
					return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s", d.Name, kind, destinationLocation(d), retention(d), archivingState(d), pending, used,
						lastDrillOK(d.Drills), estimatedRestore(d.Drills), orDash(shorten(d.ArchiveError, 60)))
				})
			})
		},
	}
}

// retention says what a destination keeps: the newest N fulls (and what
// builds on them), backups younger than N days, both, or everything.
func retention(d client.Destination) string {
	var parts []string
	if d.KeepFulls > 0 {
		parts = append(parts, fmt.Sprintf("%d full", d.KeepFulls))
		if d.KeepFulls > 1 {
			parts[0] += "s"
		}
	}
	if d.KeepDays > 0 {
		parts = append(parts, fmt.Sprintf("%dd", d.KeepDays))
	}
	if len(parts) == 0 {
		return "all"
	}
	return strings.Join(parts, ", ")
}

func archivingState(d client.Destination) string {
	switch {
	case !d.Archiving:
		return "off"
	case d.ArchivePaused:
		return "paused"
	}
	return "on"
}

func newDestinationRmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"delete"},
		Short:   "Remove a destination's configuration (its backups stay)",
		Long: `Remove the destination NAME from the configuration. Nothing is deleted
there: its backups and catalog stay, and adding the destination again (of
this cluster) finds them. Schedules that use it must be deleted first.`,
		Example: "  coffer backup destination rm nas",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				where := "where they are"
				if ds, err := c.ListDestinations(ctx); err == nil {
					if d, err := findDestination(ds, args[0]); err == nil {
						where = "in " + destinationLocation(d)
					}
				}
				if err := c.DeleteDestination(ctx, args[0]); err != nil {
					return err
				}
				return g.printResult(cmd, deletedJSON(args[0]), "destination %s removed; its backups stay %s\n", args[0], where)
			})
		},
	}
}

func newDestinationTestCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "test NAME",
		Short: "Test a destination: write, read back and delete a probe file",
		Long: `Connect to the destination NAME, write a probe file, read it back, delete
it, and check that its catalog is this cluster's. Fails with the reason
(unreachable, authentication, permission, missing bucket, changed host key,
no space); the server gives up after 30s without an answer.`,
		Example: "  coffer backup destination test nas",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withClient(func(ctx context.Context, c *client.Client) error {
				r, err := c.TestDestination(ctx, args[0])
				if err != nil {
					return err
				}
				if g.format == "json" {
					out := map[string]any{"destination": args[0], "ok": true}
					if r.Note != "" {
						out["note"] = r.Note
					}
					printNote(cmd, r.Note, true)
					return g.printJSON(cmd, out)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "destination %s OK: a probe file was written, read back and deleted\n", args[0])
				printNote(cmd, r.Note, false)
				return nil
			})
		},
	}
}

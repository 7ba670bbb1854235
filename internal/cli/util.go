package cli

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"iter"
	"os"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/client"
)

// defaultWallet is the wallet every server has after init.
const defaultWallet = "default"

// maxValueBytes bounds values read from files or stdin (the server takes 64 KiB).
const maxValueBytes = 1 << 20

// readValue returns --value or the contents of --value-file ("-" = stdin).
// required says whether one of them must be given.
func readValue(cmd *cobra.Command, value, file string, required bool) ([]byte, error) {
	switch {
	case value != "" && file != "":
		return nil, errors.New("give either --value or --value-file, not both")
	case value != "":
		return []byte(value), nil
	case file != "":
		var (
			v   []byte
			err error
		)
		if file == "-" {
			v, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), maxValueBytes+1))
		} else {
			var f *os.File
			if f, err = os.Open(file); err == nil {
				v, err = io.ReadAll(io.LimitReader(f, maxValueBytes+1))
				f.Close() // #nosec G104 -- read-only file: Close cannot lose data
			}
		}
		if err != nil {
			return nil, fmt.Errorf("read value: %w", err)
		}
		if len(v) > maxValueBytes {
			return nil, fmt.Errorf("value file %s is larger than %d bytes", file, maxValueBytes)
		}
		if len(v) == 0 {
			return nil, fmt.Errorf("value file %s is empty", file)
		}
		return v, nil
	case required:
		return nil, errors.New("give --value or --value-file (- for stdin)")
	}
	return nil, nil
}

// collect reads every item of a listing that the server pages; none is an
// empty (not nil) slice, which JSON shows as [].
func collect[T any](items iter.Seq2[T, error]) ([]T, error) {
	all := []T{}
	for it, err := range items {
		if err != nil {
			return nil, err
		}
		all = append(all, it)
	}
	return all, nil
}

// requireFlag refuses an empty value of a required flag: "FLAG is required".
func requireFlag(value, flag string) error {
	if value == "" {
		return fmt.Errorf("%s is required", flag)
	}
	return nil
}

// oneStdin refuses two file flags that both say "-" (stdin).
func oneStdin(file1, flag1, file2, flag2 string) error {
	if file1 == "-" && file2 == "-" {
		return fmt.Errorf("only one of %s and %s can be stdin", flag1, flag2)
	}
	return nil
}

// parseAttrs turns k=v arguments into a map.
func parseAttrs(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("attribute %q: use key=value", kv)
		}
		m[k] = v
	}
	return m, nil
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// isObjectID reports whether ref is an object id (UUID form) rather than a name.
func isObjectID(ref string) bool { return uuidRE.MatchString(ref) }

// resolveRef turns REF (an id, or a name in wallet) into an object id.
func resolveRef(ctx context.Context, c *client.Client, wallet, ref string) (string, error) {
	if isObjectID(ref) {
		return strings.ToLower(ref), nil
	}
	o, err := c.DescribeObjectByName(ctx, wallet, ref)
	if err != nil {
		return "", err
	}
	return o.ID, nil
}

func newTable(cmd *cobra.Command) *tabwriter.Writer {
	return newTableTo(cmd.OutOrStdout())
}

// newTableTo is newTable on any writer.
func newTableTo(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.RFC3339)
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return fmtTime(*t)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// algorithmOf is "AES-256", "RSA-3072", "EC-256" or "OPAQUE (n bytes)".
func algorithmOf(o client.Object) string {
	switch {
	case o.Algorithm == "":
		return "-"
	case o.Type == client.TypeSecretData:
		return o.Algorithm
	case o.Length > 0:
		return fmt.Sprintf("%s-%d", o.Algorithm, o.Length)
	}
	return o.Algorithm
}

// sortedAttrs renders attributes as k=v, k=v in key order.
func sortedAttrs(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		keys[i] = k + "=" + m[k]
	}
	return strings.Join(keys, ", ")
}

// printObject writes an object's metadata as a two-column table.
func printObject(w io.Writer, o client.Object) {
	fmt.Fprintf(w, "ID:\t%s\n", o.ID)
	fmt.Fprintf(w, "Wallet:\t%s\n", o.Wallet)
	fmt.Fprintf(w, "Name:\t%s\n", o.Name)
	fmt.Fprintf(w, "Type:\t%s\n", o.Type)
	fmt.Fprintf(w, "Algorithm:\t%s\n", algorithmOf(o))
	state := o.State
	if o.Reason != "" {
		state += " (" + o.Reason + ")"
	}
	fmt.Fprintf(w, "State:\t%s\n", state)
	fmt.Fprintf(w, "Latest version:\t%d\n", o.Latest)
	fmt.Fprintf(w, "Attributes:\t%s\n", sortedAttrs(o.Attributes))
	fmt.Fprintf(w, "Created:\t%s by %s\n", fmtTime(o.Created), orDash(o.CreatedBy))
	fmt.Fprintf(w, "Updated:\t%s\n", fmtTime(o.Updated))
	for _, t := range []struct {
		name string
		at   *time.Time
	}{{"Activated", o.Activated}, {"Deactivated", o.Deactivated}, {"Compromised", o.Compromised}, {"Destroyed", o.Destroyed}} {
		if t.at != nil {
			fmt.Fprintf(w, "%s:\t%s\n", t.name, fmtTime(*t.at))
		}
	}
}

// encodeValue renders material in an encoding: base64, hex or raw.
func encodeValue(v []byte, encoding string) ([]byte, error) {
	switch encoding {
	case "base64":
		return []byte(base64.StdEncoding.EncodeToString(v)), nil
	case "hex":
		return []byte(hex.EncodeToString(v)), nil
	case "raw":
		return v, nil
	}
	return nil, fmt.Errorf("--encoding %q: use base64, hex or raw", encoding)
}

// checkFormat refuses an unknown --format.
func (g *globals) checkFormat() error {
	if g.format != "table" && g.format != "json" {
		return fmt.Errorf("--format %q: use table or json", g.format)
	}
	return nil
}

package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"

	"github.com/coffer-kms/coffer/internal/formats"
	"github.com/coffer-kms/coffer/internal/service"
)

// buildCommit is stamped by the build (make build, make deb):
//
//	-ldflags "-X github.com/coffer-kms/coffer/internal/cli.buildCommit=$(git describe --always --dirty)"
//
// Empty: the VCS information Go records in the binary is used instead.
var buildCommit string

// BuildInfo describes this binary.
type BuildInfo struct {
	Version   string           `json:"version"`
	Commit    string           `json:"commit"`
	GoVersion string           `json:"go_version"`
	Platform  string           `json:"platform"`
	Formats   []formats.Format `json:"formats"`
}

// Build returns the version and build information of this binary.
func Build() BuildInfo {
	b := BuildInfo{Version: service.Version, Commit: buildCommit, GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH, Formats: formats.Formats()}
	if b.Commit == "" {
		b.Commit = commitFromBuildInfo()
	}
	return b
}

// commitFromBuildInfo is the VCS revision Go recorded at build time (with
// "-dirty" for uncommitted changes), "unknown" without one (go run, tests).
func commitFromBuildInfo() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if rev == "" {
		return "unknown"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if modified == "true" {
		rev += "-dirty"
	}
	return rev
}

// String is the human-readable form "coffer version" prints.
func (b BuildInfo) String() string {
	s := fmt.Sprintf("coffer %s\ncommit:   %s\ngo:       %s\nplatform: %s\non-disk formats (reads / writes):\n", b.Version, b.Commit, b.GoVersion, b.Platform)
	for _, f := range b.Formats {
		reads := fmt.Sprint(f.Writes)
		if f.Oldest != f.Writes {
			reads = fmt.Sprintf("%d-%d", f.Oldest, f.Writes)
		}
		s += fmt.Sprintf("  %-16s %s / %d\n", f.Name, reads, f.Writes)
	}
	return s
}

func newVersionCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit, Go version and on-disk format versions",
		Long: `Print the version of this binary, the commit it was built from, the Go
version, and for every on-disk format (keystore, state schema, journal
segments, backup bundles) the versions this build reads and writes.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := g.checkFormat(); err != nil {
				return err
			}
			b := Build()
			if g.format == "json" {
				return g.printJSON(cmd, b)
			}
			fmt.Fprint(cmd.OutOrStdout(), b.String())
			return nil
		},
	}
}

package cli

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

func (a *app) schemaCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of pipeline files",
		Long: `Schema prints the JSON Schema (draft-07) of pipeline files, generated from the
same registry of step kinds that validation uses. Editors use it through the
yaml-language-server modeline at the top of a pipeline file:

  # yaml-language-server: $schema=schema.json`,
		Example: `  flow schema > schema.json
  flow schema | jq '.properties.stages'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := generateSchema(a.reg)
			if err != nil {
				return &exitError{code: ExitFailed, msg: err.Error()}
			}
			if _, err := a.stdout.Write(b); err != nil {
				return &exitError{code: ExitFailed, msg: err.Error()}
			}
			return nil
		},
	}
}

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of flow",
		Long: `Version prints the module version of this build (or "(devel)" for a build from
a work tree), the commit it was built from, and the Go version.

The commit comes from the version control information Go stamps into a build
made in a git clone (go build, go install; -buildvcs=true forces it). A build
without it (go run, a git worktree, a source archive) says so, unless the
commit was given at link time:
  go build -ldflags="-X github.com/flowrun/flow/internal/cli.Revision=$(git rev-parse HEAD)" ./cmd/flow`,
		Example: `  flow version`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			bi, ok := debug.ReadBuildInfo()
			fmt.Fprint(a.stdout, versionText(bi, ok, Revision))
			return nil
		},
	}
}

// buildVersion is the version of this build in one line, for reports:
// the module version, and the revision when built from a work tree.
func buildVersion() string {
	bi, ok := debug.ReadBuildInfo()
	first, rest, _ := strings.Cut(versionText(bi, ok, Revision), "\n")
	version := strings.TrimPrefix(first, "flow ")
	if rev, ok := strings.CutPrefix(rest, "revision "); ok {
		rev, _, _ = strings.Cut(rev, "\n")
		version += " " + rev
	}
	return version
}

// Revision is the commit of a build made without Go's version control
// stamping, set at link time with -ldflags "-X ...cli.Revision=COMMIT".
var Revision string

// versionText renders the build information: the module version, the
// commit (from Go's vcs.* settings, else from Revision), the Go version.
func versionText(bi *debug.BuildInfo, ok bool, linked string) string {
	version, rev, when, modified := "(unknown)", "", "", false
	if ok && bi != nil {
		if bi.Main.Version != "" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	out := "flow " + version + "\n"
	switch {
	case rev != "":
		out += "commit " + rev
		if when != "" {
			out += " (" + when + ")"
		}
		if modified {
			out += " with local changes"
		}
		out += "\n"
	case linked != "":
		out += "commit " + linked + "\n"
	default:
		out += "commit unknown: built without version control information (go run, a git worktree or -buildvcs=false); build in a git clone with go build -buildvcs=true\n"
	}
	goVersion := runtime.Version()
	if ok && bi != nil && bi.GoVersion != "" {
		goVersion = bi.GoVersion
	}
	out += fmt.Sprintf("%s %s/%s\n", goVersion, runtime.GOOS, runtime.GOARCH)
	return out
}

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
a work tree), the revision it was built from when known, and the Go version.`,
		Example: `  flow version`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fmt.Fprint(a.stdout, versionText())
			return nil
		},
	}
}

// buildVersion is the version of this build in one line, for reports:
// the module version, and the revision when built from a work tree.
func buildVersion() string {
	first, rest, _ := strings.Cut(versionText(), "\n")
	version := strings.TrimPrefix(first, "flow ")
	if rev, ok := strings.CutPrefix(rest, "revision "); ok {
		rev, _, _ = strings.Cut(rev, "\n")
		version += " " + rev
	}
	return version
}

func versionText() string {
	version, rev, when, modified := "(unknown)", "", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
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
	if rev != "" {
		out += "revision " + rev
		if when != "" {
			out += " (" + when + ")"
		}
		if modified {
			out += " with local changes"
		}
		out += "\n"
	}
	out += fmt.Sprintf("%s %s/%s\n", runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return out
}

package cli

import (
	"runtime/debug"
	"strings"
	"testing"
)

// TestVersionText: flow version names the commit from Go's version control
// stamp, else from the link-time Revision, else says why it cannot.
func TestVersionText(t *testing.T) {
	stamped := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261203221531-c7a37c6f484d"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "c7a37c6f484dd4545451e20e0434925f775749ad"},
			{Key: "vcs.time", Value: "2026-12-03T22:15:31Z"}, {Key: "vcs.modified", Value: "true"}}}
	plain := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}
	cases := []struct {
		name   string
		bi     *debug.BuildInfo
		ok     bool
		linked string
		want   []string
	}{
		{"stamped by go build", stamped, true, "", []string{
			"flow v0.0.0-20261203221531-c7a37c6f484d\n",
			"commit c7a37c6f484dd4545451e20e0434925f775749ad (2026-12-03T22:15:31Z) with local changes\n",
			"go1.26.8 "}},
		{"the stamp wins over the link-time commit", stamped, true, "0123abc", []string{"commit c7a37c6f484d"}},
		{"given at link time", plain, true, "0123abc", []string{"flow (devel)\n", "commit 0123abc\n"}},
		{"neither", plain, true, "", []string{"commit unknown: built without version control information", "-buildvcs=true"}},
		{"no build information at all", nil, false, "", []string{"flow (unknown)\n", "commit unknown"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := versionText(c.bi, c.ok, c.linked)
			for _, w := range c.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in:\n%s", w, got)
				}
			}
			if n := strings.Count(got, "\n"); n != 3 {
				t.Errorf("%d lines, want 3:\n%s", n, got)
			}
		})
	}
}

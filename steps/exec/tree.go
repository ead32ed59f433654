package exec

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"sync/atomic"
)

// tagVar names the environment variable that tags every process an exec
// item starts: "<process token>-<item number>". Programs inherit it down
// their whole tree, setsid and double forks included, which is how the
// processes of one item are found again after their parent is gone (see
// tree_linux.go).
const tagVar = "FLOW_EXEC_ID"

// token is random per flow process, so that a tag never matches the
// processes of another run, even one that had the same pid.
var token = func() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}()

var itemSeq atomic.Uint64

func newTag() string { return token + "-" + strconv.FormatUint(itemSeq.Add(1), 10) }

// childEnv is the environment a program starts with: flow's own, without
// the FLOW_VAR_* variables (flow's inputs, secrets among them: a program
// gets a variable only when the pipeline passes it, through argv, env or
// stdin). It also returns the tag flow itself runs under, if it runs inside
// an exec item (a nested flow run).
func childEnv(environ []string) (env []string, outer string) {
	env = make([]string, 0, len(environ)+1)
	for _, kv := range environ {
		switch {
		case strings.HasPrefix(kv, tagVar+"="):
			outer = strings.TrimPrefix(kv, tagVar+"=")
		case strings.HasPrefix(kv, "FLOW_VAR_"), strings.HasPrefix(kv, guardVar+"="):
		default:
			env = append(env, kv)
		}
	}
	return env, outer
}

// tagEntry is the environment entry that tags a program with tag. The
// outer tag stays in front, so that an outer flow finds these processes
// too.
func tagEntry(outer, tag string) string {
	if outer != "" {
		tag = outer + "," + tag
	}
	return tagVar + "=" + tag
}

// tagged reports whether environ (NUL-separated, as /proc/PID/environ
// holds it) carries a tag that match accepts.
func tagged(environ []byte, match func(tag string) bool) bool {
	for _, kv := range strings.Split(string(environ), "\x00") {
		v, ok := strings.CutPrefix(kv, tagVar+"=")
		if !ok {
			continue
		}
		for _, t := range strings.Split(v, ",") {
			if match(t) {
				return true
			}
		}
	}
	return false
}

// guardVar, set in the environment of a re-executed flow, makes it the
// guard of the flow process that started it (see tree_linux.go).
const guardVar = "FLOW_EXEC_GUARD"

//go:build tools

// Package deps pins modules that packages of this repository use, so that
// parallel work on those packages does not race on go.mod.
package deps
import (
 _ "gopkg.in/yaml.v3"
 _ "github.com/expr-lang/expr"
 _ "github.com/hashicorp/go-retryablehttp"
 _ "golang.org/x/time/rate"
 _ "github.com/spf13/cobra"
 _ "github.com/santhosh-tekuri/jsonschema/v6"
 _ "github.com/rogpeppe/go-internal/testscript"
 _ "go.uber.org/goleak"
 _ "golang.org/x/image/draw"
 _ "github.com/disintegration/imaging"
 _ "golang.org/x/term"
 _ "golang.org/x/sys/unix"
 _ "golang.org/x/sync/errgroup"
)


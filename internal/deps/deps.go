//go:build tools

// Package deps pins modules that packages of this repository use, so that
// parallel work on those packages does not race on go.mod.
package deps

import (
	_ "github.com/disintegration/imaging"
	_ "github.com/expr-lang/expr"
	_ "github.com/hashicorp/go-retryablehttp"
	_ "github.com/rogpeppe/go-internal/testscript"
	_ "github.com/santhosh-tekuri/jsonschema/v6"
	_ "github.com/spf13/cobra"
	_ "go.uber.org/goleak"
	_ "golang.org/x/image/draw"
	_ "golang.org/x/sync/errgroup"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
	_ "golang.org/x/time/rate"
	_ "gopkg.in/yaml.v3"
)

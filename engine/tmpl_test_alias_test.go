package engine

import "github.com/flowrun/flow/tmpl"

type tmplT = tmpl.T

var tmplCompile = tmpl.Compile

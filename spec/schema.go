package spec

// JSON Schemas of the types that decode themselves (conf.Schemaer). They
// describe exactly what the UnmarshalNode methods in values.go accept, so that
// editors flag in the file what 'flow validate' would reject.

// RatePattern matches what ParseRate accepts: N/s, N/m, N/h or N/<duration>.
const RatePattern = `^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*/\s*(s|sec|second|m|min|minute|h|hour|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)\s*$`

// ByteSizePattern matches what ParseByteSize accepts.
const ByteSizePattern = `^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*([bBkKmMgG]|[kKmMgGtT][bB]|[kKmMgGtT][iI][bB])?\s*$`

func (*Rate) JSONSchema() map[string]any {
	return map[string]any{"type": "string", "pattern": RatePattern, "examples": []any{"10/s", "600/m", "1/h"},
		// yaml-language-server shows this instead of the regular expression.
		"patternErrorMessage": `invalid rate: write it as N/s, N/m or N/h, e.g. "10/s" or "600/m"`}
}

func (*Workers) JSONSchema() map[string]any {
	return map[string]any{"anyOf": []any{
		map[string]any{"type": "integer", "minimum": 1},
		map[string]any{"type": "string", "enum": []any{"auto"}},
	}}
}

func (*Complete) JSONSchema() map[string]any {
	return map[string]any{"anyOf": []any{
		map[string]any{"type": "string", "enum": []any{"all", "first"}},
		map[string]any{
			"type":                 "object",
			"properties":           map[string]any{"first": map[string]any{"type": "integer", "minimum": 1, "description": "How many successes complete the stage."}},
			"required":             []any{"first"},
			"additionalProperties": false,
		},
	}}
}

// JSONSchema of a kind reference in general; the schema generator replaces it
// with one property per registered kind.
func (*KindRef) JSONSchema() map[string]any {
	return map[string]any{"anyOf": []any{
		map[string]any{"type": "string", "minLength": 1},
		map[string]any{"type": "object", "minProperties": 1, "maxProperties": 1},
	}}
}

func (*ByteSize) JSONSchema() map[string]any {
	return map[string]any{"anyOf": []any{
		map[string]any{"type": "integer", "minimum": 0},
		map[string]any{"type": "string", "pattern": ByteSizePattern, "patternErrorMessage": `invalid size: write it like "512MiB", "1GB" or "65536"`},
	}}
}

func (*Vars) JSONSchema() map[string]any {
	longKeys := []any{"default", "secret", "description"}
	return map[string]any{
		"type":          "object",
		"propertyNames": map[string]any{"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
		"additionalProperties": map[string]any{
			// Any value is a default, except that a mapping whose keys are all
			// among default, secret and description is the long form.
			"if": map[string]any{"type": "object", "minProperties": 1, "propertyNames": map[string]any{"enum": longKeys}},
			"then": map[string]any{"properties": map[string]any{
				"default":     map[string]any{"description": "Default value of the variable."},
				"secret":      map[string]any{"type": "boolean", "description": "Never print the value in logs or reports."},
				"description": map[string]any{"type": "string", "description": "What the variable is for."},
			}},
		},
	}
}

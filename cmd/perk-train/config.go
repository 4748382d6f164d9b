package main

// The --config file: a YAML or JSON mapping whose keys are perk-train flag
// names and whose values are what the flag would be given. A flag on the
// command line wins over the same key in the file.

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// configFlag names the flag that reads a config file.
const configFlag = "config"

// applyConfig reads the --config file, when one is given, and sets every
// flag it names that the command line did not set. Keys are flag names
// (underscores may stand for dashes); values are scalars, or lists for the
// flags that take several values. An unknown key, a nested value or a
// value the flag rejects is an error naming the file and the key.
func applyConfig(fs *pflag.FlagSet, path string) error {
	if path == "" {
		return nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil { // YAML is a superset of JSON
		return fmt.Errorf("--config %s: %w", path, err)
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	set := map[string]string{}
	for _, key := range keys {
		name := strings.ReplaceAll(key, "_", "-")
		f := fs.Lookup(name)
		if f == nil || name == configFlag || name == "help" {
			return fmt.Errorf("--config %s: key %q is not a perk-train flag (see perk-train --help)", path, key)
		}
		if prev, dup := set[name]; dup {
			return fmt.Errorf("--config %s: key %q repeats %q", path, key, prev)
		}
		set[name] = key
		if fs.Changed(name) {
			continue // the command line wins
		}
		value, err := configValue(doc[key])
		if err != nil {
			return fmt.Errorf("--config %s: key %q: %w", path, key, err)
		}
		if err := fs.Set(name, value); err != nil {
			return fmt.Errorf("--config %s: key %q: %w", path, key, err)
		}
	}
	return nil
}

// configValue renders a decoded YAML/JSON value as flag text: scalars as
// themselves, lists as comma-separated scalars.
func configValue(v any) (string, error) {
	if list, ok := v.([]any); ok {
		parts := make([]string, len(list))
		for i, x := range list {
			s, err := configScalar(x)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	}
	return configScalar(v)
}

func configScalar(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case int:
		return strconv.Itoa(x), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case nil:
		return "", fmt.Errorf("no value")
	}
	return "", fmt.Errorf("value of type %T is not a scalar or a list of scalars", v)
}

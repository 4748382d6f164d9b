package kerneltest

import "flag"

// flagValue returns the value of a registered command-line flag, or "".
func flagValue(name string) string {
	if f := flag.Lookup(name); f != nil {
		return f.Value.String()
	}
	return ""
}

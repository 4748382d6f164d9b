//go:build cuda

package main

import (
	"fmt"

	"github.com/perkgo/perk/runtime"
	"github.com/perkgo/perk/runtime/cuda"
)

// profilerCheck reports whether --profile can work on dev.
func profilerCheck(dev runtime.Device) error {
	if _, ok := dev.(*cuda.Device); !ok {
		return fmt.Errorf("--profile needs --device cuda (have %s)", dev.Kind())
	}
	return nil
}

func profilerStart(dev runtime.Device) error {
	d, ok := dev.(*cuda.Device)
	if !ok {
		return fmt.Errorf("--profile needs --device cuda (have %s)", dev.Kind())
	}
	return d.ProfilerStart()
}

func profilerStop(dev runtime.Device) {
	if d, ok := dev.(*cuda.Device); ok {
		_ = d.ProfilerStop()
	}
}

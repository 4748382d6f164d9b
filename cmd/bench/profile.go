//go:build !cuda

package main

import (
	"fmt"

	"github.com/perkgo/perk/runtime"
)

func profilerCheck(runtime.Device) error {
	return fmt.Errorf("--profile needs a CUDA device: %w", runtime.ErrNoCUDA)
}

func profilerStart(runtime.Device) error { return profilerCheck(nil) }

func profilerStop(runtime.Device) {}

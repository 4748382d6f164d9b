//go:build !cuda

package main

import (
	"fmt"

	"github.com/perkgo/perk/runtime"
)

func profilerStart(dev runtime.Device) error {
	return fmt.Errorf("--profile needs a CUDA device: %w", runtime.ErrNoCUDA)
}

func profilerStop(runtime.Device) {}

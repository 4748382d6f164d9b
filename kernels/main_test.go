package kernels_test

import (
	"os"
	"testing"

	"github.com/perkgo/perk/kernels/kerneltest"
)

func TestMain(m *testing.M) { os.Exit(kerneltest.Main(m)) }

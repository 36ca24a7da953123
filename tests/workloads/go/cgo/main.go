// Go and C on one thread, alternately: main.callC calls the C function cwork through cgo (the
// runtime switches to the system stack: runtime.cgocall -> runtime.asmcgocall -> cwork), then
// main.goWork spins in pure Go for about as long. Build with CGO_ENABLED=1 (needs gcc).
// Prints "ready", then runs until killed.
package main

/*
// noinline: a C frame of its own under cgo's wrapper (_cgo_<hash>_Cfunc_cwork), which gcc -O2
// would otherwise absorb it into.
__attribute__((noinline)) static long cwork(long n) {
	volatile long s = 0;
	for (long i = 0; i < n; i++) {
		s += i % 7;
	}
	return s;
}
*/
import "C"

import "os"

var sink int

//go:noinline
func callC(n int) int { return int(C.cwork(C.long(n))) }

//go:noinline
func goWork(n int) int {
	s := 0
	for i := 0; i < n; i++ {
		s += i * i % 7
	}
	return s
}

func main() {
	os.Stdout.WriteString("ready\n")
	for {
		sink += callC(2000000)
		sink += goWork(2000000)
	}
}

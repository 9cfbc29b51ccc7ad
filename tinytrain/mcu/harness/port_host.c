/* port_host.c - the bench program on the build machine: stdout, no instruction clock. */
#include <stdio.h>

#include "bench.h"

void port_init(void) {}
void port_write(const char *s, int n) { fwrite(s, 1, (size_t)n, stdout); }
uint64_t port_ticks(void) { return 0; }
uint64_t port_calibration_ticks(uint32_t iterations) { (void)iterations; return 0; }
long port_stack_bytes(void) { return -1; }
long port_heap_bytes(void) { return -1; }

/* bench.h - the measurement program shared by the host build and the emulated board.
 *
 * bench_data.c (generated) holds the images; a port file (port_host.c or the board's) supplies
 * output, an instruction clock and the stack/heap figures. */
#ifndef TT_BENCH_H
#define TT_BENCH_H

#include <stdint.h>

extern const int32_t bench_epochs, bench_n_train, bench_n_test, bench_image_bytes;
extern const uint8_t bench_train_images[];   /* n_train x image_bytes, RGB HWC */
extern const int32_t bench_train_labels[];
extern const uint8_t bench_test_images[];    /* n_test x image_bytes */

void port_init(void);
void port_write(const char *s, int n);
uint64_t port_ticks(void);                   /* 0 where there is no instruction clock */
uint64_t port_calibration_ticks(uint32_t iterations);  /* ticks of a loop of 2 x iterations instructions */
long port_stack_bytes(void);                 /* stack high-water mark, -1 if unknown */
long port_heap_bytes(void);                  /* heap in use, -1 if unknown */

#endif

/* port_mps2_an500.c - the bench program's port on the emulated Cortex-M7.
 *
 * Output and exit go through Arm semihosting (BKPT 0xAB), called directly so that no C-library I/O
 * state takes RAM. The instruction clock is SysTick on the core clock: under
 * `qemu-system-arm -icount shift=0` every instruction advances virtual time by 1 ns, so SysTick
 * ticks count instructions (QEMU's mps2 core clock is 25 MHz: 40 per tick). The harness measures
 * the ratio with a loop of known length, so nothing here assumes it. These are instructions, not
 * cycles: QEMU models no pipeline, caches or memory wait states. */
#include <stddef.h>
#include <stdint.h>

#include "bench.h"

#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define STACK_PAINT 0x5AA5C33Cu

#define SYS_OPEN 0x01
#define SYS_WRITE 0x05
#define SYS_EXIT 0x18
#define ADP_STOPPED_APPLICATION_EXIT 0x20026
#define ADP_STOPPED_RUNTIME_ERROR 0x20023

extern uint32_t _stack_bottom, _stack_top;
extern char end;

static volatile uint32_t wraps;
static int console = -1;
static long heap_used;

static int semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void SysTick_Handler(void) { wraps++; }

void port_init(void)
{
    const uint32_t open_args[3] = {(uint32_t)":tt", 4 /* "w" */, 3};
    console = semihost(SYS_OPEN, open_args);
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 7;                 /* core clock, interrupt on wrap, enable */
    while (SYST_CVR == 0) {
    }
}

void port_write(const char *s, int n)
{
    const uint32_t args[3] = {(uint32_t)console, (uint32_t)s, (uint32_t)n};
    semihost(SYS_WRITE, args);
}

void port_exit(int status)
{
    semihost(SYS_EXIT, (const void *)(status == 0 ? ADP_STOPPED_APPLICATION_EXIT : ADP_STOPPED_RUNTIME_ERROR));
    for (;;) {
    }
}

uint64_t port_ticks(void)
{
    uint32_t w, v;
    do {
        w = wraps;
        v = SYST_CVR;
    } while (w != wraps);
    return (uint64_t)w * 0x1000000u + (0xFFFFFFu - v);
}

uint64_t port_calibration_ticks(uint32_t iterations)
{
    const uint64_t t0 = port_ticks();
    __asm__ volatile("1: subs %0, %0, #1\n\tbne 1b" : "+r"(iterations) : : "cc");
    return port_ticks() - t0;
}

long port_stack_bytes(void)
{
    const uint32_t *p = &_stack_bottom;
    while (p < &_stack_top && *p == STACK_PAINT)
        p++;
    return (long)((const char *)&_stack_top - (const char *)p);
}

/* The heap, if the C library ever asks for one, grows from `end` upwards; the runtime never does. */
void *_sbrk(ptrdiff_t increment)
{
    char *at = &end + heap_used;
    heap_used += increment;
    return at;
}

long port_heap_bytes(void) { return heap_used; }

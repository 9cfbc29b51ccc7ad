/* startup_mps2_an500.c - reset for a Cortex-M7 (QEMU's mps2-an500, or an STM32H7-class part).
 *
 * The vector table holds the initial stack pointer and the handlers. Reset paints the stack with a
 * pattern (so its high-water mark can be measured), copies .data from flash, zeroes .bss, enables
 * the FPU and calls main; main's status goes to port_exit. */
#include <stdint.h>

#define STACK_PAINT 0x5AA5C33Cu

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _stack_bottom, _stack_top;
extern int main(void);
extern void port_exit(int status);
void Reset_Handler(void);
void SysTick_Handler(void);

static void Default_Handler(void)
{
    for (;;) {
    }
}

__attribute__((section(".vectors"), used)) const void *const tt_vectors[16] = {
    &_stack_top, (const void *)Reset_Handler,
    (const void *)Default_Handler, (const void *)Default_Handler,   /* NMI, HardFault */
    (const void *)Default_Handler, (const void *)Default_Handler,   /* MemManage, BusFault */
    (const void *)Default_Handler, 0, 0, 0, 0,                      /* UsageFault, reserved */
    (const void *)Default_Handler, (const void *)Default_Handler,   /* SVC, DebugMon */
    0, (const void *)Default_Handler, (const void *)SysTick_Handler /* reserved, PendSV, SysTick */
};

void Reset_Handler(void)
{
    uint32_t sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (volatile uint32_t *p = &_stack_bottom; p < (uint32_t *)(sp - 64);)
        *p++ = STACK_PAINT;
    const uint32_t *src = &_sidata;
    for (uint32_t *d = &_sdata; d < &_edata;)
        *d++ = *src++;
    for (uint32_t *d = &_sbss; d < &_ebss;)
        *d++ = 0;
    *(volatile uint32_t *)0xE000ED88u |= 0xFu << 20;   /* CPACR: full access to CP10 and CP11 */
    __asm__ volatile("dsb\n\tisb");
    port_exit(main());
}

/* _arm_kernel.h included once per ARM width the extension runs (8, 12 and 16 hidden units) for the
 * instruction set ISA that the includer defines, and those kernels listed as ISA_kernels[3]. */

#define UNITS 8
#include "_arm_kernel.h"
#undef UNITS
#define UNITS 12
#include "_arm_kernel.h"
#undef UNITS
#define UNITS 16
#include "_arm_kernel.h"
#undef UNITS

#define KERNELS(isa) JOIN_KERNELS(isa)
#define JOIN_KERNELS(isa) static const Kernel isa##_kernels[3] = {run_phase_##isa##_8, run_phase_##isa##_12, run_phase_##isa##_16}
KERNELS(ISA);
#undef KERNELS
#undef JOIN_KERNELS

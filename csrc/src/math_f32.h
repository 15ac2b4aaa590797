/* math_f32.h - libm names for float, for net_impl.h. */
#define TSFX _f32
#define T float
#define EXP expf
#define EXPM1 expm1f
#define LOG logf
#define LOG1P log1pf
#define TANH tanhf
#define ERF erff
#define ERFC erfcf
#define SQRT sqrtf
#define FABS fabsf
#define FMA fmaf
#define COPYSIGN copysignf
#define ANY_NONFINITE_T any_nonfinite_f32

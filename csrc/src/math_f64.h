/* math_f64.h - libm names for double, for net_impl.h. */
#define TSFX _f64
#define T double
#define EXP exp
#define EXPM1 expm1
#define LOG log
#define LOG1P log1p
#define TANH tanh
#define ERF erf
#define ERFC erfc
#define SQRT sqrt
#define FABS fabs
#define FMA fma
#define COPYSIGN copysign
#define ANY_NONFINITE_T any_nonfinite_f64

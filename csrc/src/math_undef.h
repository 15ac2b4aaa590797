/* math_undef.h - forget the per-type names set before net_impl.h. */
#undef T
#undef SFX
#undef EXP
#undef EXPM1
#undef LOG
#undef LOG1P
#undef TANH
#undef ERF
#undef SQRT
#undef FABS
#undef FMA
#undef COPYSIGN
#undef VEXP
#undef VTANH
#undef VERFC
#undef GEMM_FN
#undef ERFC

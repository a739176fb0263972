/* exports.c — the shared library's only own translation unit. Everything else comes from
 * the rwkvpeft_core archive (linked whole); lib/exports.map keeps only rwkvpeft_* visible. */
#include "rwkvpeft.h"

/* Referenced so that the archive member holding the public API is always pulled in. */
__attribute__((used)) static uint32_t (*const exports_anchor)(void) = rwkvpeft_version_number;

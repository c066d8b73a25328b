/* kern.h -- internal helpers of the bottom layer (not part of the public API):
 * workspace scopes and the thread index. Included by src/ops and above; this
 * folder includes nothing but lina.h and system headers. */
#ifndef LINA_KERN_H
#define LINA_KERN_H

#include "lina.h"

/* ---- workspace plumbing: a kernel may be called with ws == NULL ---- */
typedef struct lina_ws_scope {
    lina_ws local;
    lina_ws *ws;
} lina_ws_scope;
int lina_ws_scope_open(lina_ws_scope *sc, lina_ws *ws, int nslots);
void lina_ws_scope_close(lina_ws_scope *sc);

int lina_thread_id(void);
/* The first workspace slot no kernel uses as a per-thread slot: an op wrapper
 * keeps buffers there that must survive the kernels it calls. */
int lina_ws_extra_slot(void);

/* CPU seconds used by the process so far (every thread) */
double lina_cpu_now(void);

#endif

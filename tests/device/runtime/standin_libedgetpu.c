/*
 * Test stand-in for libedgetpu.so.1 (the Edge TPU runtime cannot be installed here).
 *
 * It implements the same external-delegate ABI the real library exports and LiteRT/tflite_runtime's
 * `load_delegate` calls: `tflite_plugin_create_delegate(keys, values, n, report_error)` and
 * `tflite_plugin_destroy_delegate(delegate)`, with the real option key "device" ("usb", "usb:N", "pci",
 * "pci:N", ":N"). Like libedgetpu with no matching TPU, it reports an error and returns NULL.
 * Which TPUs are "attached" comes from STANDIN_EDGETPU_DEVICES (comma-separated, e.g. "usb:0,pci:0");
 * each successful creation appends "device=<option>" to STANDIN_EDGETPU_LOG when set.
 * Its delegate claims no nodes (it cannot execute edgetpu-custom-op): models run on the CPU kernels.
 *
 * Faults of a libedgetpu built for another TensorFlow Lite (google-coral/edgetpu#731, #841): with
 * STANDIN_EDGETPU_FAULT=segv its Prepare (called while the interpreter is created, after load_delegate has
 * succeeded) dereferences NULL, a real SIGSEGV; with STANDIN_EDGETPU_FAULT=hang it never returns. Compiled
 * with -DSTANDIN_UNRESOLVED it references a symbol no library defines, so dlopen(RTLD_NOW) fails, as a
 * libedgetpu built against another glibc/abseil does.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct TfLiteDelegate {
  void* data_;
  int (*Prepare)(void* context, struct TfLiteDelegate* delegate);
  void* CopyFromBufferHandle;
  void* CopyToBufferHandle;
  void* FreeBufferHandle;
  int64_t flags;
  void* opaque_delegate_builder;
} TfLiteDelegate;

static int prepare(void* context, TfLiteDelegate* delegate) {
  (void)context;
  (void)delegate;
  const char* fault = getenv("STANDIN_EDGETPU_FAULT");
  if (fault != NULL && strcmp(fault, "segv") == 0) {
    volatile int* nowhere = NULL;
    *nowhere = 1;
  }
  if (fault != NULL && strcmp(fault, "hang") == 0) {
    for (;;) pause();
  }
  return 0;
}

#ifdef STANDIN_UNRESOLVED
extern void edgetpu_symbol_of_another_build(void);
void standin_unresolved(void) { edgetpu_symbol_of_another_build(); }
#endif

/* Does the attached device `have` ("usb:0") satisfy the request `want` ("", "usb", "usb:0", ":0")? */
static int matches(const char* want, const char* have, int position) {
  if (want[0] == '\0') return 1;
  if (want[0] == ':') return atoi(want + 1) == position;
  if (strchr(want, ':') != NULL) return strcmp(want, have) == 0;
  return strncmp(want, have, strlen(want)) == 0 && have[strlen(want)] == ':';
}

TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n,
                                              void (*report_error)(const char*)) {
  const char* want = "";
  for (size_t i = 0; i < n; ++i) {
    if (strcmp(keys[i], "device") == 0) want = values[i];
  }
  const char* attached = getenv("STANDIN_EDGETPU_DEVICES");
  int found = 0;
  if (attached != NULL) {
    char copy[256];
    strncpy(copy, attached, sizeof(copy) - 1);
    copy[sizeof(copy) - 1] = '\0';
    int position = 0;
    for (char* have = strtok(copy, ","); have != NULL && !found; have = strtok(NULL, ","), ++position) {
      found = matches(want, have, position);
    }
  }
  if (!found) {
    if (report_error) report_error("Failed to open device");
    return NULL;
  }
  const char* log_path = getenv("STANDIN_EDGETPU_LOG");
  if (log_path != NULL) {
    FILE* log = fopen(log_path, "a");
    if (log) { fprintf(log, "device=%s\n", want); fclose(log); }
  }
  TfLiteDelegate* delegate = calloc(1, sizeof(TfLiteDelegate));
  delegate->Prepare = prepare;
  return delegate;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) { free(delegate); }

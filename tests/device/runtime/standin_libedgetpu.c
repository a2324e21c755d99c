/*
 * Test stand-in for libedgetpu.so.1 (the Edge TPU runtime cannot be installed here).
 *
 * It implements the same external-delegate ABI the real library exports and LiteRT/tflite_runtime's
 * `load_delegate` calls: `tflite_plugin_create_delegate(keys, values, n, report_error)` and
 * `tflite_plugin_destroy_delegate(delegate)`, with the real option key "device" ("usb", "usb:N", "pci",
 * "pci:N", ":N"). Like libedgetpu with no matching TPU, it reports an error and returns NULL.
 * Which TPUs are "attached" comes from STANDIN_EDGETPU_DEVICES (comma-separated, e.g. "usb:0,pci:0");
 * each successful creation appends "device=<option>" to STANDIN_EDGETPU_LOG when set.
 * Its delegate claims no nodes (it cannot execute edgetpu-custom-op): models run on the CPU kernels. The
 * TPU's arithmetic (outputs a few raw units off the CPU's) comes with the model instead: tests/tpu_arithmetic.py
 * writes an "edgetpu variant" whose logits are rounded differently, which the stand-in then runs.
 *
 * Faults of a libedgetpu built for another TensorFlow Lite (google-coral/edgetpu#731, #841): with
 * STANDIN_EDGETPU_FAULT=segv its Prepare (called while the interpreter is created, after load_delegate has
 * succeeded) dereferences NULL, a real SIGSEGV; with STANDIN_EDGETPU_FAULT=hang it never returns. A build
 * compiled with -DSTANDIN_BUILD_FAULT='"segv"' has that fault while the variable is unset: the fault belongs
 * to the build, so replacing the file with another build removes it, as installing the matched libedgetpu
 * does. Compiled with -DSTANDIN_UNRESOLVED it references a symbol no library defines, so dlopen(RTLD_NOW)
 * fails, as a libedgetpu built against another glibc/abseil does.
 *
 * One process at a time, like the real part: an Edge TPU is opened by one process; further delegates of the
 * same process share it (libedgetpu's "opened for shared ownership"), a delegate in another process fails
 * while the first holds it. The stand-in takes an exclusive flock(2) on <lock dir>/edgetpu-<device>.lock
 * (lock dir: STANDIN_EDGETPU_LOCK_DIR, else the directory it was compiled for, -DSTANDIN_LOCK_DIR) at the
 * first delegate of a process, counts the delegates, and releases the lock when the last one is destroyed;
 * the kernel releases it when the process dies. A second process gets what the PCIe driver gives it: no
 * error text from the plugin (so LiteRT raises "Failed to load delegate from <library>"), and on stderr the
 * line the apex driver writes to the kernel log ("Process N is opening a node held by M."). With "auto"
 * (no device option) it takes the first attached TPU no other process holds, as libedgetpu enumerates.
 * Not mimicked: the USB Accelerator's worse behaviour (the process already holding it can abort when
 * another opens it) and the firmware download at first open.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
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

#ifndef STANDIN_BUILD_FAULT
#define STANDIN_BUILD_FAULT ""
#endif

static int prepare(void* context, TfLiteDelegate* delegate) {
  (void)context;
  (void)delegate;
  const char* fault = getenv("STANDIN_EDGETPU_FAULT");
  if (fault == NULL || fault[0] == '\0') fault = STANDIN_BUILD_FAULT;
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

#ifndef STANDIN_LOCK_DIR
#define STANDIN_LOCK_DIR "/tmp"
#endif
#define MAX_DEVICES 8

/* The TPUs this process holds: their lock file descriptors and how many live delegates use each. */
static struct { char name[32]; int fd; int delegates; } held[MAX_DEVICES];

static const char* lock_dir(void) {
  const char* dir = getenv("STANDIN_EDGETPU_LOCK_DIR");
  return dir != NULL && dir[0] != '\0' ? dir : STANDIN_LOCK_DIR;
}

static int held_slot(const char* name) {
  for (int i = 0; i < MAX_DEVICES; ++i) {
    if (held[i].delegates > 0 && strcmp(held[i].name, name) == 0) return i;
  }
  return -1;
}

/* Claims the TPU `name` ("usb:0") for this process: 1 when claimed (or already ours), 0 when another
 * process holds it (*holder: its pid, when it wrote one). */
static int claim(const char* name, long* holder) {
  int slot = held_slot(name);
  if (slot >= 0) { held[slot].delegates++; return 1; }
  for (slot = 0; slot < MAX_DEVICES && held[slot].delegates > 0; ++slot) {}
  if (slot == MAX_DEVICES) return 0;
  char path[512];
  snprintf(path, sizeof(path), "%s/edgetpu-%s.lock", lock_dir(), name);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) return 0;
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    char text[32] = {0};
    *holder = pread(fd, text, sizeof(text) - 1, 0) > 0 ? atol(text) : 0;
    close(fd);
    return 0;
  }
  char text[32];
  int length = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, text, (size_t)length, 0) != length) { /* the pid is only a hint */ }
  strncpy(held[slot].name, name, sizeof(held[slot].name) - 1);
  held[slot].fd = fd;
  held[slot].delegates = 1;
  return 1;
}

static void release(const char* name) {
  int slot = held_slot(name);
  if (slot < 0) return;
  if (--held[slot].delegates == 0) {
    close(held[slot].fd); /* closing the last descriptor releases the flock */
    held[slot].name[0] = '\0';
  }
}

typedef struct StandinDelegate {
  TfLiteDelegate base; /* first: the pointer LiteRT gets is the TfLiteDelegate */
  char device[32];
} StandinDelegate;

TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n,
                                              void (*report_error)(const char*)) {
  const char* want = "";
  for (size_t i = 0; i < n; ++i) {
    if (strcmp(keys[i], "device") == 0) want = values[i];
  }
  const char* attached = getenv("STANDIN_EDGETPU_DEVICES");
  int found = 0, busy = 0;
  long holder = 0;
  char chosen[32] = {0};
  if (attached != NULL) {
    char copy[256];
    strncpy(copy, attached, sizeof(copy) - 1);
    copy[sizeof(copy) - 1] = '\0';
    int position = 0;
    for (char* have = strtok(copy, ","); have != NULL && !found; have = strtok(NULL, ","), ++position) {
      if (!matches(want, have, position)) continue;
      if (claim(have, &holder)) {
        found = 1;
        strncpy(chosen, have, sizeof(chosen) - 1);
      } else {
        busy = 1;
      }
    }
  }
  if (!found && busy) { /* the apex driver's kernel log line; the plugin itself reports no text */
    fprintf(stderr, "apex: Process %ld is opening a node held by %ld.\n", (long)getpid(), holder);
    return NULL;
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
  StandinDelegate* delegate = calloc(1, sizeof(StandinDelegate));
  delegate->base.Prepare = prepare;
  strncpy(delegate->device, chosen, sizeof(delegate->device) - 1);
  return &delegate->base;
}

void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) {
  if (delegate == NULL) return;
  release(((StandinDelegate*)delegate)->device);
  free(delegate);
}

/* Attach to a host process by its host pid. */
#include "hostile.h"
#include <sys/ptrace.h>
#include <sys/wait.h>

int main(int argc, char **argv) {
    if (argc != 2) usage("ptrace_pid PID");
    pid_t p = atoi(argv[1]);
    if (ptrace(PTRACE_SEIZE, p, 0, 0) < 0) blocked("ptrace(PTRACE_SEIZE)", errno);
    escaped("seized pid %d", p);
}

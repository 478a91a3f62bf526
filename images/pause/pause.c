/*
 * pause: the process that holds a pod's namespaces (the "sandbox" or "infra" container).
 *
 * It sleeps until SIGTERM or SIGINT and then exits 0. As PID 1 of a pod that shares its PID
 * namespace it is the init that orphans are re-parented to, so it reaps every child that exits
 * (SIGCHLD) and no zombie is left behind. Nothing else: no files, no network, no output.
 *
 * scripts/build-image pause compiles it with `gcc -static -Os -s` into the `pause` image
 * (entrypoint /pause, user 65535), which the test node's containerd uses as its sandbox image.
 */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_terminate(int signal_number) {
    (void)signal_number;
    _exit(0);
}

static void on_child(int signal_number) {
    (void)signal_number;
    int saved = errno;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    errno = saved;
}

static int handle(int signal_number, void (*handler)(int), int flags) {
    struct sigaction action = {0};
    action.sa_handler = handler;
    action.sa_flags = flags;
    sigemptyset(&action.sa_mask);
    return sigaction(signal_number, &action, NULL);
}

int main(void) {
    if (handle(SIGINT, on_terminate, 0) < 0 || handle(SIGTERM, on_terminate, 0) < 0 ||
        handle(SIGCHLD, on_child, SA_NOCLDSTOP | SA_RESTART) < 0) {
        return 1;
    }
    /* A child that exited before the handler was installed. */
    on_child(SIGCHLD);
    for (;;) {
        pause();
    }
}

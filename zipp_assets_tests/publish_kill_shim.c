/* Loaded into the fault-injection driver (LD_PRELOAD): kills the process inside a Delta commit on a
   local lake. delta-rs writes a commit's log entry to `_delta_log/N.json#k` and publishes it with
   linkat() to `N.json`, which fails if another writer got there first; the commit takes effect at
   that link. ZIPP_FAULTS_PUBLISH="publish:DATASET:n" kills the process at the n-th publication of
   an entry of DATASET (empty: any table), just before the link; "published:DATASET:n" just after
   it, before delta-rs has returned. Every call goes on to the real linkat. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int publications = 0;

static int is_entry_of(const char *path, const char *dataset) {
    const char *log = strstr(path, "/_delta_log/");
    if (!log || strchr(log + 12, '#') || !strstr(log + 12, ".json")) return 0;
    if (!*dataset) return 1;
    size_t n = strlen(dataset);
    return (size_t)(log - path) > n && log[-(long)n - 1] == '/' && strncmp(log - n, dataset, n) == 0;
}

int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags) {
    static int (*real)(int, const char *, int, const char *, int);
    if (!real) real = (int (*)(int, const char *, int, const char *, int))dlsym(RTLD_NEXT, "linkat");
    const char *spec = getenv("ZIPP_FAULTS_PUBLISH");
    char when[16] = "", dataset[128] = "";
    int n = 0, kill_now = 0;
    if (spec && (sscanf(spec, "%15[a-z]:%127[^:]:%d", when, dataset, &n) == 3
                 || sscanf(spec, "%15[a-z]::%d", when, &n) == 2)
        && is_entry_of(newpath, dataset) && ++publications == n)
        kill_now = 1;
    if (kill_now && strcmp(when, "publish") == 0) kill(getpid(), SIGKILL);
    int result = real(olddirfd, oldpath, newdirfd, newpath, flags);
    if (kill_now) kill(getpid(), SIGKILL);
    return result;
}

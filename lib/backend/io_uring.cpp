// SPDX-License-Identifier: MIT
// io_uring backend for io_loop: readiness through one-shot POLL_ADD, re-armed after each report.
//
// One-shot polls (not multishot) give the same level-triggered contract as epoll: a handler
// that leaves data unread is told again, because the re-armed poll completes at once. Re-arms,
// adds, changes and removals only queue SQEs; they reach the kernel with the next wait(), so an
// iteration costs one io_uring_enter however many fds changed.
//
// The one tricky piece: a poll's completion can already sit in the CQ when its fd is changed or
// removed. Each fd carries a generation, encoded in the poll's user_data with the fd, and a
// completion whose generation is not the fd's current one is dropped.
#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <memory>
#include <new>
#include <vector>

#include "backend/backend.hpp"

namespace squall::detail {
namespace {

constexpr unsigned ring_entries = 256;
// Room for every completion of a batch: a keep-alive connection's turn completes two
// operations (its send and its receive), and a completion posted to a full queue goes to a
// list the kernel allocates an entry for (measured at 1,000 connections with the default of
// twice ring_entries: ~1.5% of the server's CPU in kmalloc/kfree and the overflow flush).
// 4,096 entries of 16 bytes: 64 KiB per loop.
constexpr unsigned cq_entries = 4096;

// The receive region (see provided_region): 32 buffers of 64 KiB, 2 MiB in all, one huge page
// where the kernel allows it. Not yet in every liburing's headers: buffers consumed a piece at
// a time (Linux 6.12), and the CQE flag that says a buffer has room left.
constexpr unsigned provided_count = 32;
constexpr std::size_t provided_size = 64 * 1024;
constexpr std::size_t region_size = provided_count * provided_size;
constexpr unsigned short provided_group = 0;
constexpr unsigned short pbuf_ring_inc = 2;   // IOU_PBUF_RING_INC
constexpr unsigned cqe_f_buf_more = 1u << 4;  // IORING_CQE_F_BUF_MORE

// user_data layout. 0 marks completions nobody waits for (poll removals). The top two bits 01
// mark a readiness poll: fd in bits 0-31, generation in bits 32-61; 10 a fixed-file entry made
// (file_tag, fd in bits 0-31). Other values are kept free for per-operation records (pointers,
// whose top bits are 00). liburing's own internal timeout
// (LIBURING_UDATA_TIMEOUT, all ones, used on kernels before 5.11) has top bits 11 and is
// ignored.
constexpr std::uint64_t tag_mask = std::uint64_t{3} << 62;
constexpr std::uint64_t poll_tag = std::uint64_t{1} << 62;
// 110 + the operation's pointer: a cancel's own completion; 111 + pointer: the timer after which
// a cancel that found nothing to cancel yet is tried again (see cancelling_). Neither is ever
// all ones (a pointer's bits 48-60 are zero).
constexpr std::uint64_t cancel_tag = std::uint64_t{6} << 61;
constexpr std::uint64_t recancel_tag = std::uint64_t{7} << 61;
constexpr std::uint64_t subtag_mask = std::uint64_t{7} << 61;
constexpr std::uint64_t gen_mask = (std::uint64_t{1} << 30) - 1;

std::uint64_t poll_data(int fd, std::uint32_t gen) {
  return poll_tag | ((std::uint64_t{gen} & gen_mask) << 32) | static_cast<std::uint32_t>(fd);
}

unsigned to_poll(unsigned events) {
  unsigned m = 0;
  if (events & io_loop::read) m |= POLLIN | POLLRDHUP;
  if (events & io_loop::write) m |= POLLOUT;
  return m;
}

unsigned from_poll(int res, unsigned interest) {
  // A negative result is an error of the poll itself (-EBADF for an fd closed before the poll
  // was submitted, say): report it as an error on the fd so its handler finds out.
  if (res < 0) return io_loop::error | interest;
  unsigned r = 0;
  if (res & (POLLIN | POLLRDHUP)) r |= io_loop::read;
  if (res & POLLOUT) r |= io_loop::write;
  if (res & (POLLERR | POLLHUP | POLLNVAL)) r |= io_loop::error | interest;
  return r;
}

// Kernels before 5.19 reject a receive with IORING_RECVSEND_POLL_FIRST set (EINVAL).
bool kernel_at_least(int major, int minor) {
  utsname u{};
  if (::uname(&u) != 0) return false;
  int ma = 0, mi = 0;
  if (std::sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
  return ma > major || (ma == major && mi >= minor);
}

class io_uring_backend final : public backend {
 public:
  io_uring_backend() = default;
  ~io_uring_backend() override {
    if (ring_ok_) io_uring_queue_exit(&ring_);  // the kernel lets go of the buffer ring here
    provided_.release();
    if (event_fd_ >= 0) ::close(event_fd_);
  }

  int init(bool defer) noexcept {
    poll_first_ = kernel_at_least(5, 19);
    // COOP_TASKRUN (Linux 5.19): completions are run when we next enter the kernel instead of
    // interrupting us, which costs less (measured ~7% less server CPU per message on the
    // 100-connection echo, docs/performance.md). Older kernels refuse the flag: retry without.
    // DEFER_TASKRUN (Linux 6.1, with SINGLE_ISSUER) goes further, only when the loop asks for
    // it (io_loop::options::defer_completions): completions are run when the loop enters the
    // kernel to wait for them. The ring then belongs to one thread, the first to submit; a loop
    // may be created on one thread and run on another, so it starts disabled (R_DISABLED) and
    // the first call that enters the kernel (enter()), normally the first wait, enables it on
    // its own thread. Not the default: deferred work does not signal the eventfd an embedding
    // host polls (measured on 6.18: embed_test's pipe never woke it). CQSIZE: see cq_entries.
    constexpr unsigned deferring =
        IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED;
    // The best set first; a kernel that refuses one (EINVAL) gets the next.
    const unsigned tries[] = {deferring, IORING_SETUP_COOP_TASKRUN, 0};
    int r = -EINVAL;
    for (unsigned flags : tries) {
      if (r != -EINVAL) break;
      if (flags == deferring && !defer) continue;
      io_uring_params p{};
      p.flags = flags | IORING_SETUP_CQSIZE;
      p.cq_entries = cq_entries;
      r = io_uring_queue_init_params(ring_entries, &ring_, &p);
      deferred_ = r == 0 && flags == deferring;
    }
    ring_ok_ = r == 0;
    return r;
  }

  backend_kind kind() const noexcept override { return backend_kind::io_uring; }

  int add(int fd, unsigned events) noexcept override {
    // Refuse what epoll refuses, so both backends agree: fds that are not open (EBADF), and
    // regular files and directories (EPERM), which a poll would report ready forever.
    struct stat st;
    if (::fstat(fd, &st) != 0) return -errno;
    if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) return -EPERM;
    if (static_cast<std::size_t>(fd) >= fds_.size()) {
      try {
        fds_.resize(static_cast<std::size_t>(fd) + 1);
      } catch (...) {
        return -ENOMEM;
      }
    }
    fd_state& s = fds_[static_cast<std::size_t>(fd)];
    s.interest = events;
    s.gen = (s.gen + 1) & gen_mask;
    return arm(fd, s);
  }

  int modify(int fd, unsigned events) noexcept override {
    fd_state& s = fds_[static_cast<std::size_t>(fd)];
    disarm(s, fd);
    s.interest = events;
    return arm(fd, s);
  }

  int remove(int fd) noexcept override {
    if (fd < 0 || static_cast<std::size_t>(fd) >= fds_.size()) return -ENOENT;
    fd_state& s = fds_[static_cast<std::size_t>(fd)];
    disarm(s, fd);
    s.interest = 0;
    return 0;
  }

  int wait(std::int64_t timeout_ns, ready_event* out, int capacity) noexcept override {
    rearm_reported();
    provided_.recycle();
    int r = submit_and_wait(timeout_ns);
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY) return r;
    if (event_fd_ < 0) return harvest(out, capacity);
    // Embedded: drain the eventfd after submitting (what the submission completed at once is
    // in the CQ now) and before harvesting (a completion posted after this read signals it
    // again), so the host neither misses a completion nor wakes for one already handled.
    eventfd_t v;
    (void)::eventfd_read(event_fd_, &v);
    int n = harvest(out, capacity);
    if (io_uring_cq_ready(&ring_) > 0) (void)::eventfd_write(event_fd_, 1);  // left for later
    return n;
  }

  void flush() noexcept override {
    // (Not provided_.recycle(): flush() may come in the middle of a batch, from a close,
    // before the fibers of the batch's later completions have copied their bytes out.)
    rearm_reported();
    if (io_uring_sq_ready(&ring_) > 0) submit();
  }

  // --- Fiber I/O: operations on the ring ------------------------------------------------------

  bool completion_based() const noexcept override { return true; }

  int submit_recv(int fd, void* buf, std::size_t len, int flags, bool expect_empty,
                  io_completion* op) noexcept override {
    io_uring_sqe* sqe = get_sqe();
    if (!sqe) return -EBUSY;
    io_uring_prep_recv(sqe, fd, buf, len, flags);
    use_fixed(sqe, fd);
    // A receive that would find nothing costs io_uring a failed attempt before it arms its
    // poll; POLL_FIRST (Linux 5.19) arms the poll straight away. Measured on the
    // 100-connection echo: about 5% less server CPU per message (docs/performance.md).
    if (expect_empty && poll_first_) sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    io_uring_sqe_set_data(sqe, op);
    return 0;
  }

  bool provides_buffers() noexcept override {
    if (ring_ok_ && !provided_.tried()) provided_.setup(ring_);
    return provided_.ok();
  }

  int submit_recv_provided(int fd, std::size_t len, bool expect_empty,
                           io_completion* op) noexcept override {
    if (!provided_.ok()) return -ENOSYS;
    io_uring_sqe* sqe = get_sqe();
    if (!sqe) return -EBUSY;
    io_uring_prep_recv(sqe, fd, nullptr, std::min(len, provided_size), 0);
    use_fixed(sqe, fd);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = provided_group;
    if (expect_empty && poll_first_) sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    io_uring_sqe_set_data(sqe, op);
    return 0;
  }

  const char* provided_bytes(int res, unsigned events, unsigned flags) const noexcept override {
    if (res <= 0 || !(flags & IORING_CQE_F_BUFFER)) return nullptr;
    return provided_.bytes(flags >> IORING_CQE_BUFFER_SHIFT, events, static_cast<unsigned>(res));
  }

  int submit_sendmsg(int fd, const msghdr* msg, int flags, io_completion* op) noexcept override {
    io_uring_sqe* sqe = get_sqe();
    if (!sqe) return -EBUSY;
    // One buffer to a connected socket goes as a plain send: SENDMSG copies the msghdr and its
    // iovec array in from user space first (as sendmsg() does; see send_iov in async_fd.cpp).
    if (msg->msg_iovlen == 1 && !msg->msg_name && !msg->msg_control)
      io_uring_prep_send(sqe, fd, msg->msg_iov[0].iov_base, msg->msg_iov[0].iov_len, flags);
    else
      io_uring_prep_sendmsg(sqe, fd, msg, static_cast<unsigned>(flags));
    use_fixed(sqe, fd);
    io_uring_sqe_set_data(sqe, op);
    return 0;
  }

  int submit_recvmsg(int fd, msghdr* msg, int flags, io_completion* op) noexcept override {
    io_uring_sqe* sqe = get_sqe();
    if (!sqe) return -EBUSY;
    io_uring_prep_recvmsg(sqe, fd, msg, static_cast<unsigned>(flags));
    use_fixed(sqe, fd);
    io_uring_sqe_set_data(sqe, op);
    return 0;
  }

  int submit_accept(int fd, sockaddr* addr, unsigned* addrlen, int flags,
                    io_completion* op) noexcept override {
    io_uring_sqe* sqe = get_sqe();
    if (!sqe) return -EBUSY;
    io_uring_prep_accept(sqe, fd, addr, reinterpret_cast<socklen_t*>(addrlen), flags);
    use_fixed(sqe, fd);
    io_uring_sqe_set_data(sqe, op);
    return 0;
  }

  int submit_connect(int fd, const sockaddr* addr, unsigned addrlen,
                     io_completion* op) noexcept override {
    io_uring_sqe* sqe = get_sqe();
    if (!sqe) return -EBUSY;
    io_uring_prep_connect(sqe, fd, addr, addrlen);
    use_fixed(sqe, fd);
    io_uring_sqe_set_data(sqe, op);
    return 0;
  }

  int submit_poll(int fd, unsigned events, io_completion* op) noexcept override {
    io_uring_sqe* sqe = get_sqe();
    if (!sqe) return -EBUSY;
    io_uring_prep_poll_add(sqe, fd, to_poll(events));
    use_fixed(sqe, fd);
    io_uring_sqe_set_data(sqe, op);
    return 0;
  }

  int submit_cancel(io_completion* op) noexcept override {
    io_uring_sqe* sqe = get_sqe();
    if (!sqe) return -EBUSY;
    io_uring_prep_cancel(sqe, op, 0);
    io_uring_sqe_set_data64(sqe, cancel_tag | reinterpret_cast<std::uintptr_t>(op));
    if (std::find(cancelling_.begin(), cancelling_.end(), op) == cancelling_.end()) {
      try {
        cancelling_.push_back(op);
        cancels_pending_ = cancelling_.size();
      } catch (...) {
        // Out of memory: this cancel is tried once, as before there were retries.
      }
    }
    return 0;
  }

  void dispatched(io_completion* op, unsigned flags) noexcept override {
    if (flags & IORING_CQE_F_MORE) return;  // more completions to come: not done yet
    auto it = std::find(cancelling_.begin(), cancelling_.end(), op);
    if (it == cancelling_.end()) return;
    cancelling_.erase(it);
    cancels_pending_ = cancelling_.size();
  }

  int pollable_fd() noexcept override {
    if (deferred_) return -EOPNOTSUPP;  // see init()
    if (event_fd_ >= 0) return event_fd_;
    int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) return -errno;
    int r = io_uring_register_eventfd(&ring_, efd);
    if (r < 0) {
      ::close(efd);
      return r;
    }
    event_fd_ = efd;
    return efd;
  }

 private:
  // Operations asked to cancel whose own completion has not been dispatched yet (the loop calls
  // dispatched(): see backend.hpp). A cancel can miss its operation: -ENOENT when the kernel
  // holds it between its inline attempt and its poll or worker (a send to a peer that shut down
  // its side is retried that way), -EALREADY when it runs in a worker, which is signalled and
  // usually ends with EINTR. The wait stays abandoned meanwhile, and a deadline cannot cancel it
  // again, so the backend does: a millisecond later, for as long as the operation is in this
  // list. (A few entries at most: only waits being cancelled are here.)
  std::vector<io_completion*> cancelling_;

  void cancel_completed(std::uint64_t ud, int res) noexcept {
    auto* op = reinterpret_cast<io_completion*>(static_cast<std::uintptr_t>(ud & ~subtag_mask));
    if (std::find(cancelling_.begin(), cancelling_.end(), op) == cancelling_.end()) return;
    if ((ud & subtag_mask) == recancel_tag) {
      (void)submit_cancel(op);
      return;
    }
    if (res != -ENOENT && res != -EALREADY) return;  // cancelled (its completion follows)
    static const __kernel_timespec backoff{0, 1000 * 1000};
    io_uring_sqe* sqe = get_sqe();
    if (!sqe) return;
    io_uring_prep_timeout(sqe, const_cast<__kernel_timespec*>(&backoff), 0, 0);
    io_uring_sqe_set_data64(sqe, recancel_tag | reinterpret_cast<std::uintptr_t>(op));
  }

  // The buffers the kernel picks receive buffers from (IORING_REGISTER_PBUF_RING), consumed
  // a piece at a time (IOU_PBUF_RING_INC): each receive takes only the bytes it got from the
  // buffer at the ring's head, and the next one goes on right after them. A batch of small
  // requests from many connections thus lands packed together, in order, in one region that
  // keeps being reused, instead of each in a buffer of its own connection: the kernel's copies
  // and the parser's reads walk memory in sequence (the CPU's prefetchers follow) and stay in
  // a few TLB entries. The caller copies its bytes out before the loop waits again.
  //
  // Completions report which buffer, not where in it: that follows from their order (the
  // kernel consumes each buffer front to back, posting completions as it goes), so harvest()
  // counts the bytes per buffer and hands each completion its offset. A buffer the kernel has
  // used up goes back to the ring's tail at the next wait, once its bytes are copied out.
  class provided_region {
   public:
    bool ok() const noexcept { return br_ != nullptr; }
    bool tried() const noexcept { return tried_; }

    void setup(io_uring& ring) noexcept {
      tried_ = true;
      // Twice the size, to align the region to a huge page.
      void* raw = ::mmap(nullptr, 2 * region_size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (raw == MAP_FAILED) return;
      auto a = (reinterpret_cast<std::uintptr_t>(raw) + region_size - 1) & ~(region_size - 1);
      auto* region = reinterpret_cast<char*>(a);
      (void)::madvise(region, region_size, MADV_HUGEPAGE);  // a hint: fine if refused
      std::size_t ring_bytes = provided_count * sizeof(io_uring_buf);
      void* mem =
          ::mmap(nullptr, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (mem == MAP_FAILED) {
        ::munmap(raw, 2 * region_size);
        return;
      }
      auto* br = static_cast<io_uring_buf_ring*>(mem);
      io_uring_buf_ring_init(br);
      io_uring_buf_reg reg{};
      reg.ring_addr = reinterpret_cast<std::uintptr_t>(mem);
      reg.ring_entries = provided_count;
      reg.bgid = provided_group;
      reg.pad = pbuf_ring_inc;  // the kernel's `flags` field
      // Kernels before 6.12 refuse incremental buffers (EINVAL): receives then bring their own.
      if (io_uring_register_buf_ring(&ring, &reg, 0) != 0) {
        ::munmap(mem, ring_bytes);
        ::munmap(raw, 2 * region_size);
        return;
      }
      br_ = br;
      raw_ = raw;
      region_ = region;
      for (unsigned bid = 0; bid < provided_count; ++bid)
        add(bid, static_cast<int>(bid));
      io_uring_buf_ring_advance(br_, provided_count);
    }

    // harvest(): a completion that carries buffer `bid` got `res` bytes (or an error) from it.
    // Returns their offset in the buffer.
    unsigned consume(unsigned bid, int res, unsigned flags) noexcept {
      if (bid >= provided_count) return 0;
      unsigned at = used_[bid];
      if (res > 0) used_[bid] += static_cast<unsigned>(res);
      if (!(flags & cqe_f_buf_more)) used_up_ |= 1u << bid;  // the kernel moved past it
      return at;
    }

    const char* bytes(unsigned bid, unsigned offset, unsigned len) const noexcept {
      if (!br_ || bid >= provided_count || offset + std::size_t{len} > provided_size)
        return nullptr;
      return region_ + bid * provided_size + offset;
    }

    // wait(): the used-up buffers go back to the tail, whole again. Their bytes were copied out
    // by the fibers those completions woke, before this wait.
    void recycle() noexcept {
      if (!used_up_) return;
      int n = 0;
      for (unsigned bid = 0; bid < provided_count; ++bid)
        if (used_up_ & (1u << bid)) add(bid, n++);
      used_up_ = 0;
      io_uring_buf_ring_advance(br_, n);
    }

    // After io_uring_queue_exit(): the kernel no longer uses the region.
    void release() noexcept {
      if (!br_) return;
      ::munmap(br_, provided_count * sizeof(io_uring_buf));
      ::munmap(raw_, 2 * region_size);
      br_ = nullptr;
    }

   private:
    void add(unsigned bid, int offset) noexcept {
      used_[bid] = 0;
      io_uring_buf_ring_add(br_, region_ + bid * provided_size, provided_size,
                            static_cast<unsigned short>(bid),
                            io_uring_buf_ring_mask(provided_count), offset);
    }

    io_uring_buf_ring* br_ = nullptr;
    void* raw_ = nullptr;
    char* region_ = nullptr;
    unsigned used_[provided_count] = {};  // bytes the kernel has taken from each buffer
    std::uint32_t used_up_ = 0;           // buffers to put back at the next wait
    bool tried_ = false;
  };
  static_assert(provided_count <= 32, "used_up_ is a 32-bit mask");

  // Fixed files: the kernel's table of the ring's own references to files, which operations
  // name by index (IOSQE_FIXED_FILE) instead of by fd. Looking an fd up takes and drops a
  // reference to its file on every operation (fget/fput, measured at ~2.5% of the server's
  // CPU on 1,000 keep-alive connections); a table entry was looked up once, when it was made.
  //
  // The index is the fd itself, so no map is needed: the table is made sparse, as large as
  // the fd limit (at most max_files), on first use. An adopted socket's entry is made by an
  // update queued on the ring, which costs no syscall of its own (a synchronous one cost ~2%
  // of a connection's CPU when each request came on a connection of its own); operations
  // name the fd until its completion says the entry is there. The entry holds a reference of
  // its own, so closing the socket must remove it as well: the removal and the close go to
  // the kernel together, in one io_uring_enter, which costs what the close() it replaces did.
  // Updates read their value when they are submitted, from files_[fd].fd, so one still queued
  // when its socket goes removes the entry instead.
  static constexpr unsigned max_files = 32768;
  static constexpr std::uint64_t file_tag = std::uint64_t{2} << 62;  // user_data: an entry made

  struct file_slot {
    int fd = -1;         // what the slot's queued update enters: this fd, or none (-1)
    bool ready = false;  // the kernel has the entry: operations may name it
  };

  void register_file(int fd) noexcept override {
    if (!files_tried_) setup_files();
    if (fd < 0 || static_cast<unsigned>(fd) >= files_size_) return;
    io_uring_sqe* sqe = get_sqe();
    if (!sqe) return;
    files_[fd] = file_slot{fd, false};
    io_uring_prep_files_update(sqe, &files_[fd].fd, 1, fd);
    io_uring_sqe_set_data64(sqe, file_tag | static_cast<std::uint32_t>(fd));
  }

  // harvest(): the completion of register_file()'s update. (It may be that of an earlier
  // socket under the same number, closed since: then the current socket's own update has run
  // as well, every wait submitting before it harvests, and its completion comes next.) A
  // failed update (ENOMEM) leaves operations naming the fd.
  void entry_made(int fd, int res) noexcept {
    if (static_cast<unsigned>(fd) < files_size_ && files_[fd].fd == fd) files_[fd].ready = res == 1;
  }

  bool forget_entry(int fd) noexcept {
    if (static_cast<unsigned>(fd) >= files_size_ || files_[fd].fd != fd) return false;
    files_[fd] = file_slot{};
    return true;
  }

  void unregister_file(int fd) noexcept override {
    if (forget_entry(fd))
      (void)io_uring_register_files_update(&ring_, static_cast<unsigned>(fd), &files_[fd].fd, 1);
  }

  void close_file(int fd) noexcept override {
    if (!forget_entry(fd)) {
      ::close(fd);
      return;
    }
    // The removal and the close run in order, in the submitting call (neither can block).
    // What else is queued goes along: it is complete, only submitted before the wait.
    io_uring_sqe* update = get_sqe();
    io_uring_sqe* close = update ? get_sqe() : nullptr;
    // The same, one call at a time; the slots taken (if any) become no-ops.
    auto one_by_one = [&] {
      for (io_uring_sqe* sqe : {update, close}) {
        if (!sqe) continue;
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data64(sqe, 0);
      }
      (void)io_uring_register_files_update(&ring_, static_cast<unsigned>(fd), &files_[fd].fd, 1);
      ::close(fd);
    };
    if (!close) {  // no room even after a submit
      one_by_one();
      return;
    }
    io_uring_prep_files_update(update, &files_[fd].fd, 1, fd);
    io_uring_sqe_set_data64(update, 0);
    io_uring_prep_close(close, fd);
    io_uring_sqe_set_data64(close, 0);
    // Not the ring's thread (a deferred loop's socket closed from another thread than the one
    // that runs it, against the loop's rules): the two stay queued for the ring's own thread,
    // which would submit them when the fd's number may be another file's.
    if (submit() == -EEXIST) one_by_one();
  }

  void setup_files() noexcept {
    files_tried_ = true;
    rlimit rl{};
    if (!ring_ok_ || ::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    auto n = static_cast<unsigned>(std::min<rlim_t>(rl.rlim_cur, max_files));
    auto* table = new (std::nothrow) file_slot[n];
    if (!table) return;
    // Kernels before 5.19 cannot make a sparse table: operations then name fds.
    if (io_uring_register_files_sparse(&ring_, n) != 0) {
      delete[] table;
      return;
    }
    files_.reset(table);
    files_size_ = n;
  }

  // An operation on `fd` names its table entry, if it has one.
  void use_fixed(io_uring_sqe* sqe, int fd) const noexcept {
    if (static_cast<unsigned>(fd) < files_size_ && files_[fd].ready) sqe->flags |= IOSQE_FIXED_FILE;
  }

  struct fd_state {
    unsigned interest = 0;  // 0: not watched
    std::uint32_t gen = 0;
    bool armed = false;  // a POLL_ADD for this generation is queued or in the kernel
  };

  io_uring_sqe* get_sqe() noexcept {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (!sqe) {
      // The SQ is full of queued changes: push them to the kernel and take a fresh slot.
      submit();
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }

  int arm(int fd, fd_state& s) noexcept {
    io_uring_sqe* sqe = get_sqe();
    if (!sqe) return -EBUSY;
    io_uring_prep_poll_add(sqe, fd, to_poll(s.interest));
    io_uring_sqe_set_data64(sqe, poll_data(fd, s.gen));
    s.armed = true;
    return 0;
  }

  // Withdraws the poll of the current generation, if any, and moves to a new generation so a
  // completion already in the CQ is recognised as stale.
  void disarm(fd_state& s, int fd) noexcept {
    if (s.armed) {
      if (io_uring_sqe* sqe = get_sqe()) {
        io_uring_prep_poll_remove(sqe, poll_data(fd, s.gen));
        io_uring_sqe_set_data64(sqe, 0);
      }
      s.armed = false;
    }
    s.gen = (s.gen + 1) & gen_mask;
  }

  // Re-arms the one-shot polls that fired. One that cannot be armed now (no SQE even after a
  // submit) stays on the list for the next wait instead of going silent.
  void rearm_reported() noexcept {
    std::size_t keep = 0;
    for (int fd : reported_) {
      fd_state& s = fds_[static_cast<std::size_t>(fd)];
      if (s.interest != 0 && !s.armed && arm(fd, s) < 0) reported_[keep++] = fd;
    }
    reported_.resize(keep);
  }

  // Enables a disabled ring (DEFER_TASKRUN) on the calling thread, which becomes its only
  // submitter: every call that enters the kernel comes through here first.
  bool enter() noexcept {
    if (!deferred_ || enabled_) return true;
    // (liburing 2.3 declares io_uring_enable_rings but does not export it.)
    enabled_ = ::syscall(__NR_io_uring_register, ring_.ring_fd, IORING_REGISTER_ENABLE_RINGS,
                         nullptr, 0) == 0;
    return enabled_;
  }
  int submit() noexcept {
    if (!enter()) return -EEXIST;
    return io_uring_submit(&ring_);
  }

  int submit_and_wait(std::int64_t timeout_ns) noexcept {
    io_uring_cqe* cqe = nullptr;
    if (!enter()) return -EEXIST;
    // Completions already waiting: just submit what is queued. With DEFER_TASKRUN, finished
    // work is only posted when asked for (GETEVENTS), so that is asked for too.
    if (timeout_ns == 0 || io_uring_cq_ready(&ring_) > 0) {
      if (deferred_) return io_uring_submit_and_get_events(&ring_);
      return io_uring_sq_ready(&ring_) > 0 ? io_uring_submit(&ring_) : 0;
    }
    if (timeout_ns < 0) return io_uring_submit_and_wait(&ring_, 1);
    __kernel_timespec ts{timeout_ns / 1000000000, timeout_ns % 1000000000};
    return io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
  }

  int harvest(ready_event* out, int capacity) noexcept {
    int n = 0;
    unsigned head, seen = 0;
    io_uring_cqe* cqe;
    io_uring_for_each_cqe(&ring_, head, cqe) {
      if (n == capacity) break;  // the rest stay in the CQ for the next wait
      ++seen;
      std::uint64_t ud = cqe->user_data;
      if ((ud & tag_mask) == 0 && ud != 0) {
        // A fiber I/O operation: user_data is its io_completion.
        ready_event ev;
        ev.io = reinterpret_cast<io_completion*>(static_cast<std::uintptr_t>(ud));
        ev.res = cqe->res;
        ev.flags = cqe->flags;
        // A provided receive: where its bytes are in its buffer (see provided_region).
        if (cqe->flags & IORING_CQE_F_BUFFER)
          ev.events =
              provided_.consume(cqe->flags >> IORING_CQE_BUFFER_SHIFT, cqe->res, cqe->flags);
        out[n++] = ev;
        continue;
      }
      if ((ud & subtag_mask) == cancel_tag || (ud & subtag_mask) == recancel_tag) {
        if (ud != LIBURING_UDATA_TIMEOUT) cancel_completed(ud, cqe->res);
        continue;
      }
      if ((ud & tag_mask) == file_tag) {
        entry_made(static_cast<int>(ud & 0xffffffffu), cqe->res);
        continue;
      }
      if ((ud & tag_mask) != poll_tag) continue;
      std::uint32_t fd_bits = static_cast<std::uint32_t>(ud & 0xffffffffu);
      if (fd_bits >= fds_.size()) continue;
      int fd = static_cast<int>(fd_bits);
      std::uint32_t gen = static_cast<std::uint32_t>((ud >> 32) & gen_mask);
      fd_state& s = fds_[fd_bits];
      if (s.gen != gen || !s.armed) continue;  // stale: changed or removed since submission
      s.armed = false;
      try {
        reported_.push_back(fd);
      } catch (...) {
        s.armed = true;  // cannot track the re-arm: leave it as if armed rather than lose it
        continue;
      }
      out[n++] = ready_event{fd, from_poll(cqe->res, s.interest)};
    }
    io_uring_cq_advance(&ring_, seen);
    return n;
  }

  io_uring ring_{};
  bool ring_ok_ = false;
  bool poll_first_ = false;  // the kernel knows IORING_RECVSEND_POLL_FIRST
  std::vector<fd_state> fds_;
  std::vector<int> reported_;  // fds whose one-shot poll fired; re-armed at the next wait
  int event_fd_ = -1;
  provided_region provided_;
  std::unique_ptr<file_slot[]> files_;  // indexed by fd
  unsigned files_size_ = 0;
  bool files_tried_ = false;
  bool deferred_ = false;  // DEFER_TASKRUN: the ring is one thread's, enabled by enter()
  bool enabled_ = false;
};

}  // namespace

std::unique_ptr<backend> make_io_uring_backend(int& err, bool defer) {
  auto b = std::make_unique<io_uring_backend>();
  if (int r = b->init(defer); r < 0) {
    err = -r;
    return nullptr;
  }
  return b;
}

}  // namespace squall::detail

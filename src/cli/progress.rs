//! The live progress of `up` and `down` on a terminal: one status line on stderr saying how
//! many of the run's kernel operations are done and naming those in flight, oldest (the slow
//! ones) first. It appears only once a run has taken [`DELAY`], is redrawn at most every
//! [`TICK`] by a thread of its own (so that a slow operation's time runs on while no event
//! comes), and is erased before anything else is printed. It is fed by the reconciler's events,
//! which come from the applier's real steps; [`Status`] is the pure part.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A run that ends sooner shows no progress at all.
pub const DELAY: Duration = Duration::from_millis(300);
/// The status line is redrawn at most this often.
pub const TICK: Duration = Duration::from_millis(100);
/// An operation that takes this long is named on a line of its own when it ends.
pub const SLOW: Duration = Duration::from_secs(1);

/// How far a run is: its operations done out of planned, and those in flight with their start.
/// Time is handed in, never read, so that what is shown follows from the events alone.
#[derive(Debug, Default)]
pub struct Status {
    total: usize,
    done: usize,
    /// In flight by (start, order of start), to list the oldest first.
    in_flight: BTreeMap<(Instant, u64), String>,
    /// Where each address in flight is in `in_flight`.
    keys: HashMap<String, (Instant, u64)>,
    starts: u64,
}

impl Status {
    pub fn new(total: usize) -> Status {
        Status {
            total,
            ..Status::default()
        }
    }

    pub fn started(&mut self, address: &str, now: Instant) {
        if self.keys.contains_key(address) {
            return;
        }
        let key = (now, self.starts);
        self.starts += 1;
        self.in_flight.insert(key, address.to_string());
        self.keys.insert(address.to_string(), key);
    }

    pub fn done(&mut self, address: &str) {
        if let Some(key) = self.keys.remove(address) {
            self.in_flight.remove(&key);
        }
        self.done += 1;
    }

    /// `37/120 done, 32 in progress: service.web[3].link.front 2.1s, ... +30 more`, at most
    /// `width` characters (a longer line would wrap, and `\r` could not redraw it).
    pub fn line(&self, now: Instant, width: usize) -> String {
        let mut out = format!("{}/{} done", self.done.min(self.total), self.total);
        let n = self.in_flight.len();
        if n > 0 {
            out.push_str(&format!(", {n} in progress"));
        }
        let mut shown = 0;
        for ((since, _), address) in &self.in_flight {
            let item = format!(
                "{}{address} {:.1}s",
                if shown == 0 { ": " } else { ", " },
                now.saturating_duration_since(*since).as_secs_f64()
            );
            let rest = n - shown - 1;
            let more = if rest > 0 {
                format!(" +{rest} more")
            } else {
                String::new()
            };
            if out.chars().count() + item.chars().count() + more.len() > width {
                break;
            }
            out.push_str(&item);
            shown += 1;
        }
        if shown > 0 && shown < n {
            out.push_str(&format!(" +{} more", n - shown));
        }
        out.chars().take(width).collect()
    }
}

/// What the status line and the ticker share.
#[derive(Default)]
struct Board {
    /// The run in progress and when it began; None outside `up`'s and `down`'s apply.
    run: Option<(Status, Instant)>,
    drawn: bool,
    stop: bool,
}

/// The live status line of one run on stderr (which the caller made sure is a terminal).
pub struct Live {
    board: Arc<(Mutex<Board>, Condvar)>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

impl Live {
    pub fn new() -> Live {
        Live {
            board: Arc::default(),
            ticker: Mutex::new(None),
        }
    }

    fn board(&self) -> MutexGuard<'_, Board> {
        self.board.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The apply begins with `total` operations: start counting, and the ticker.
    pub fn begin(&self, total: usize) {
        *self.board() = Board {
            run: Some((Status::new(total), Instant::now())),
            ..Board::default()
        };
        let mut ticker = self.ticker.lock().unwrap_or_else(PoisonError::into_inner);
        if ticker.is_none() {
            let board = Arc::clone(&self.board);
            *ticker = std::thread::Builder::new()
                .name("progress".into())
                .spawn(move || tick(&board))
                .ok();
        }
    }

    pub fn started(&self, address: &str) {
        if let Some((status, _)) = &mut self.board().run {
            status.started(address, Instant::now());
        }
    }

    pub fn done(&self, address: &str) {
        if let Some((status, _)) = &mut self.board().run {
            status.done(address);
        }
    }

    /// Whether a run is being shown (its resources then need no line each).
    pub fn active(&self) -> bool {
        self.board().run.is_some()
    }

    /// Print through `print` with the status line out of the way; the next tick redraws it.
    pub fn say(&self, print: impl FnOnce()) {
        let mut board = self.board();
        if board.drawn {
            erase();
            board.drawn = false;
        }
        print();
    }

    /// The run is over: erase the line and stop the ticker.
    pub fn finish(&self) {
        {
            let mut board = self.board();
            if board.drawn {
                erase();
            }
            *board = Board {
                stop: true,
                ..Board::default()
            };
        }
        self.board.1.notify_all();
        if let Some(t) = self
            .ticker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = t.join();
        }
    }
}

impl Drop for Live {
    /// A run that fails (or panics) leaves no status line behind.
    fn drop(&mut self) {
        self.finish();
    }
}

/// The ticker: every [`TICK`], redraw the line of a run older than [`DELAY`].
fn tick(board: &(Mutex<Board>, Condvar)) {
    let (lock, wake) = board;
    let mut b = lock.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        b = wake
            .wait_timeout(b, TICK)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        if b.stop {
            return;
        }
        let now = Instant::now();
        let line = match &b.run {
            Some((status, began)) if now.duration_since(*began) >= DELAY => {
                status.line(now, width().saturating_sub(1))
            }
            Some(_) | None => continue,
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line}\x1b[K");
        let _ = err.flush();
        b.drawn = true;
    }
}

fn erase() {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r\x1b[K");
    let _ = err.flush();
}

/// The terminal's width in columns: `COLUMNS` when set, else the terminal's own, else 80.
fn width() -> usize {
    if let Some(n) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return n;
    }
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct it is given, which lives here.
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) };
    if rc == 0 && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    }
}

/// Whether stderr takes a live line: a terminal that is not `dumb`, and no `NO_COLOR` (whose
/// users ask for plain output).
pub fn wanted(terminal: bool) -> bool {
    terminal
        && std::env::var_os("NO_COLOR").is_none()
        && std::env::var("TERM").map_or(true, |t| t != "dumb")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn counts_done_of_planned_and_names_the_oldest_in_flight_first() {
        let t0 = Instant::now();
        let mut s = Status::new(5);
        assert_eq!(s.line(t0, 80), "0/5 done");
        s.started("network.front", t0);
        s.started("service.web[1]", at(t0, 100));
        s.started("service.web[2]", at(t0, 200));
        s.done("service.web[1]");
        assert_eq!(
            s.line(at(t0, 2100), 80),
            "1/5 done, 2 in progress: network.front 2.1s, service.web[2] 1.9s"
        );
        s.done("network.front");
        s.done("service.web[2]");
        assert_eq!(s.line(at(t0, 2100), 80), "3/5 done");
    }

    #[test]
    fn a_narrow_terminal_gets_the_oldest_and_a_count_of_the_rest() {
        let t0 = Instant::now();
        let mut s = Status::new(40);
        for i in 1..=30 {
            s.started(&format!("service.web[{i}].link.front"), at(t0, i));
        }
        let line = s.line(at(t0, 1000), 80);
        assert_eq!(
            line,
            "0/40 done, 30 in progress: service.web[1].link.front 1.0s +29 more"
        );
        assert!(s.line(at(t0, 1000), 20).chars().count() <= 20);
    }

    #[test]
    fn an_address_started_twice_is_in_flight_once() {
        let t0 = Instant::now();
        let mut s = Status::new(1);
        s.started("dns.front", t0);
        s.started("dns.front", at(t0, 500));
        assert_eq!(
            s.line(at(t0, 1000), 80),
            "0/1 done, 1 in progress: dns.front 1.0s"
        );
        s.done("dns.front");
        assert_eq!(s.line(at(t0, 1000), 80), "1/1 done");
    }
}

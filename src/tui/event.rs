//! Threads that feed the app's one channel: terminal input, and a ticker.

use std::sync::mpsc::Sender;

use ratatui::crossterm::event::{self, Event};

use super::app::Msg;

/// Forwards key, mouse and resize events until the terminal or the channel goes away.
pub fn spawn_input(tx: Sender<Msg>) {
    std::thread::spawn(move || {
        loop {
            let msg = match event::read() {
                Ok(Event::Key(k)) => Msg::Key(k),
                Ok(Event::Mouse(m)) => Msg::Mouse(m),
                Ok(Event::Resize(w, h)) => Msg::Resize(w, h),
                Ok(_) => continue,
                Err(_) => return,
            };
            if tx.send(msg).is_err() {
                return;
            }
        }
    });
}

/// Sends [`Msg::Tick`] every `every` until the channel goes away (drives lock sweeps).
pub fn spawn_ticker(tx: Sender<Msg>, every: std::time::Duration) {
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(every);
            if tx.send(Msg::Tick).is_err() {
                return;
            }
        }
    });
}

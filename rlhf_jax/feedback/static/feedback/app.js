// The page's behaviour: the running timer, and the ranking board (mouse drag or keyboard),
// which only mirrors the rank <select>s: those are what the form posts, so the page also works
// with the selects alone.
"use strict";

function startTimer() {
  const el = document.getElementById("timer");
  if (!el) return;
  const start = Date.now() - 1000 * Number(el.dataset.elapsed || 0);
  const show = () => {
    const s = Math.floor((Date.now() - start) / 1000);
    el.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
  };
  show();
  setInterval(show, 1000);
}

function rankBoard(board) {
  const k = Number(board.dataset.k);
  const select = (pos) => board.querySelector(`select[data-rank-for="${pos}"]`);
  const row = (rank) => board.querySelector(`[data-row="${rank || ""}"] .slots`);
  const place = (pos, rank, focus) => {
    const chip = board.querySelector(`[data-chip="${pos}"]`);
    row(rank).appendChild(chip);
    select(pos).value = rank ? String(rank) : "";
    if (focus) chip.focus();
  };
  board.querySelectorAll("select[data-rank-for]").forEach((s) => {
    place(s.dataset.rankFor, s.value, false);
    s.addEventListener("change", () => place(s.dataset.rankFor, s.value, false));
  });
  board.querySelectorAll(".chip").forEach((chip) => {
    chip.addEventListener("dragstart", (e) => {
      e.dataTransfer.setData("text/plain", chip.dataset.chip);
      e.dataTransfer.effectAllowed = "move";
    });
    chip.addEventListener("keydown", (e) => {
      const pos = chip.dataset.chip;
      const now = Number(select(pos).value || 0);
      let rank = null;
      if (/^[0-9]$/.test(e.key) && Number(e.key) <= k) rank = Number(e.key);
      else if (e.key === "ArrowUp") rank = Math.max(1, now ? now - 1 : k);
      else if (e.key === "ArrowDown") rank = now ? Math.min(k, now + 1) : 1;
      else if (e.key === "Backspace" || e.key === "Delete") rank = 0;
      if (rank === null) return;
      e.preventDefault();
      place(pos, rank, true);
    });
  });
  board.querySelectorAll("[data-row]").forEach((zone) => {
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      const pos = e.dataTransfer.getData("text/plain");
      if (pos !== "") place(pos, zone.dataset.row, false);
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  startTimer();
  document.querySelectorAll("[data-rank-board]").forEach(rankBoard);
});

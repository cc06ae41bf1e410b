/* Make every sidebar toggle work, not only the first one on the page.
 *
 * sphinx-book-theme 1.3 puts two `.primary-toggle` buttons on each page (one in the hidden pydata navbar,
 * one in the article header) and two `.secondary-toggle` buttons, but pydata-sphinx-theme and the book theme
 * bind their click handlers with `document.querySelector`, i.e. to the first, hidden one
 * (pydata-sphinx-theme issue #2451). So the visible ☰ button did nothing: at phone width the chapter menu
 * never opened, and on a desktop the sidebar never collapsed. This forwards a click on any other toggle
 * to the first one of its kind, which carries both themes' handlers (open the menu as a dialog on narrow
 * screens, hide or show the sidebar on wide ones).
 */
document.addEventListener("DOMContentLoaded", () => {
  for (const selector of [".primary-toggle", ".secondary-toggle"]) {
    const [bound, ...others] = document.querySelectorAll(selector);
    for (const button of others) {
      button.addEventListener("click", (event) => {
        event.preventDefault();
        event.stopPropagation();
        bound.click();
      });
    }
  }
});

/**
 * Small DOM helpers shared by the card and the panel. Text goes in through
 * `textContent` only: what they show comes from the kernel and from user code.
 */

/** An element with a class and text content (never HTML). */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

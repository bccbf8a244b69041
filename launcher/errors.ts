// The launcher's one error type: its message is what the user reads, on one line, before exit 1.
export class LauncherError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LauncherError";
  }
}

//! Plans with sessions off (`BATON_RESUME=off`): each task starts fresh, so its prompt carries what
//! the session would have: the earlier tasks' prompts and the files they wrote.

use baton_core::Job;

/// The prompt of task `index` of `job`'s plan run fresh: a preamble naming each earlier task with
/// its prompt and the files it wrote (`done`: task id and files, for the tasks this worker ran),
/// then the task's own `prompt`.
pub(crate) fn fresh_task_prompt(
    job: &Job,
    index: usize,
    done: &[(String, Vec<String>)],
    prompt: &str,
) -> String {
    let mut text = String::from(
        "This task is part of a plan whose earlier tasks ran in other sessions. They were:\n",
    );
    for (n, task) in job.tasks.iter().flatten().take(index).enumerate() {
        text.push_str(&format!("{}. [{}] {}\n", n + 1, task.id, task.prompt));
        match done.iter().find(|(id, _)| id == &task.id) {
            Some((_, files)) if !files.is_empty() => {
                text.push_str(&format!("   Files it wrote: {}\n", files.join(", ")));
            }
            Some(_) => text.push_str("   It wrote no files.\n"),
            // Recorded by an earlier attempt of the job, on this worker or another.
            None => text.push_str("   Its files are in the project folder.\n"),
        }
    }
    text.push_str("\nNow do this task:\n");
    text.push_str(prompt);
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::JobKind;
    use baton_core::job::{Limits, NewJob, Task};

    #[test]
    fn the_preamble_lists_the_earlier_tasks_and_their_files() {
        let task = |id: &str, prompt: &str| Task {
            id: id.into(),
            prompt: prompt.into(),
        };
        let job = NewJob {
            kind: Some(JobKind::Plan),
            project_id: "p".into(),
            user_id: "u".into(),
            prompt: "the plan".into(),
            tasks: Some(vec![
                task("app", "Create App.tsx"),
                task("header", "Create Header.tsx"),
                task("types", "Write the types"),
            ]),
            ..NewJob::default()
        }
        .into_job(&Limits::default())
        .unwrap();
        let done = vec![("header".to_string(), vec!["Header.tsx".to_string()])];
        let text = fresh_task_prompt(&job, 2, &done, "Write the types");
        assert!(
            text.contains("1. [app] Create App.tsx\n   Its files are in the project folder."),
            "{text}"
        );
        assert!(
            text.contains("2. [header] Create Header.tsx\n   Files it wrote: Header.tsx"),
            "{text}"
        );
        assert!(!text.contains("[types]"), "{text}");
        assert!(
            text.ends_with("Now do this task:\nWrite the types"),
            "{text}"
        );
    }
}
